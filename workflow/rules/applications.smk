# The application experiments (config key `applications`): one job per configured application, each
# repeating its base run over its seeds on the prepared data set, then one job drawing their figures.
# The shell command and params are shared (rules/common.smk: APP_SHELL, app_params).

if "anomaly" in APPS:

    rule anomaly:
        input:
            data=f"{RESULTS}/data/{APPS['anomaly'].settings.dataset}.pt",
        output:
            metrics=app_table("anomaly"),
            scores=app_table("anomaly_scores"),
        params:
            **app_params("anomaly"),
        conda:
            CONDA_ENV
        benchmark:
            f"{RESULTS}/benchmarks/anomaly/all.tsv"
        log:
            f"{RESULTS}/logs/anomaly/all.log",
        shell:
            APP_SHELL


if "collaborators" in APPS:

    rule collaborators:
        input:
            data=f"{RESULTS}/data/{APPS['collaborators'].settings.dataset}.pt",
        output:
            results=app_table("collaborators"),
            reciprocity=app_table("reciprocity"),
        params:
            **app_params("collaborators"),
        conda:
            CONDA_ENV
        benchmark:
            f"{RESULTS}/benchmarks/collaborators/all.tsv"
        log:
            f"{RESULTS}/logs/collaborators/all.log",
        shell:
            APP_SHELL


if "contribution" in APPS:

    rule contribution:
        input:
            data=f"{RESULTS}/data/{APPS['contribution'].settings.dataset}.pt",
        output:
            app_table("contribution"),
        params:
            **app_params("contribution"),
        conda:
            CONDA_ENV
        benchmark:
            f"{RESULTS}/benchmarks/contribution/all.tsv"
        log:
            f"{RESULTS}/logs/contribution/all.log",
        shell:
            APP_SHELL


if APPS:

    rule app_figures:
        input:
            [app_table(name) for app in APPS for name in APP_TABLES[app]],
        output:
            [
                report(f"{PIPE.figures_dir}/{kind}.png", caption=f"../report/{kind}.rst", category="Applications")
                for kind in PIPE.app_figures()
            ],
            [f"{PIPE.figures_dir}/{kind}.pdf" for kind in PIPE.app_figures()],
        params:
            tables_dir=lambda w, input: Path(input[0]).parent,
            out_dir=lambda w, output: Path(output[0]).parent,
            wandb=WANDB,
        conda:
            CONDA_ENV
        benchmark:
            f"{RESULTS}/benchmarks/app_figures/all.tsv"
        log:
            f"{RESULTS}/logs/app_figures/all.log",
        shell:
            "python -m dice_repro app-figures --tables-dir {params.tables_dir} --out-dir {params.out_dir}"
            " --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
