rule prepare_data:
    output:
        f"{RESULTS}/data/{{dataset}}.pt",
    params:
        settings=lambda w: DATASETS[w.dataset].to_json(),
    conda:
        CONDA_ENV
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv"
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    shell:
        "python -m dice_repro prepare-data --settings {params.settings:q} --out {output} > {log} 2>&1"
