rule compare:
    input:
        field_tables(),
    output:
        alignment=report(f"{RESULTS}/tables/alignment.csv", caption="../report/alignment_table.rst", category="Tables"),
        cascade=report(f"{RESULTS}/tables/cascade.csv", caption="../report/cascade_table.rst", category="Tables"),
        points=f"{RESULTS}/tables/points.csv",
    params:
        out_dir=lambda w, output: Path(output.alignment).parent,
        bootstrap=PIPE.bootstrap,
        max_points=PIPE.max_points,
        wandb=WANDB,
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/compare/all.tsv"
    log:
        f"{RESULTS}/logs/compare/all.log",
    shell:
        "python -m dice_repro compare --inputs {input} --out-dir {params.out_dir} --bootstrap {params.bootstrap}"
        " --max-points {params.max_points} --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
