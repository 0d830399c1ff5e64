rule figures:
    input:
        rules.compare.output,
    output:
        [report(f"{PIPE.figures_dir}/{kind}.png", caption=f"../report/{kind}.rst", category="Figures") for kind in PIPE.figures],
        [f"{PIPE.figures_dir}/{kind}.pdf" for kind in PIPE.figures],
    params:
        tables_dir=lambda w, input: Path(input[0]).parent,
        out_dir=lambda w, output: Path(output[0]).parent,
        plan=json.dumps(PIPE.figures),
        wandb=WANDB,
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/figures/all.tsv"
    log:
        f"{RESULTS}/logs/figures/all.log",
    shell:
        "python -m dice_repro figures --tables-dir {params.tables_dir} --out-dir {params.out_dir} --plan {params.plan:q}"
        " --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
