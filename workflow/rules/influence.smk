rule groundtruth:
    input:
        trajectory=run_file("trajectory.pt"),
        data=data_file,
    output:
        run_file("groundtruth.csv"),
    params:
        wandb=WANDB,
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/groundtruth/{{run}}.tsv"
    log:
        f"{RESULTS}/logs/groundtruth/{{run}}.log",
    shell:
        "python -m dice_repro groundtruth --trajectory {input.trajectory} --data {input.data} --out {output}"
        " --run-id {wildcards.run} --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"


rule estimate:
    input:
        trajectory=run_file("trajectory.pt"),
        data=data_file,
    output:
        run_file("estimates.csv"),
    params:
        wandb=WANDB,
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/estimate/{{run}}.tsv"
    log:
        f"{RESULTS}/logs/estimate/{{run}}.log",
    shell:
        "python -m dice_repro estimate --trajectory {input.trajectory} --data {input.data} --out {output}"
        " --run-id {wildcards.run} --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
