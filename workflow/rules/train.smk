rule train:
    input:
        data=data_file,
    output:
        run_file("trajectory.pt"),
    params:
        settings=lambda w: RUNS[w.run].to_json(),
        wandb=WANDB,
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    shell:
        "python -m dice_repro train --settings {params.settings:q} --data {input.data} --out {output}"
        " --run-id {wildcards.run} --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
