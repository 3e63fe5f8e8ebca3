"""beam-dataprep: clean, label-check, split and transform data with Apache Beam, TFT and MLMD.

The same file is what `--setup_file` ships to remote workers, so it installs the
`pipeline`, `transforms` and `runners` packages and nothing else.
"""

from setuptools import find_packages, setup

setup(
    name="beam-dataprep",
    version="0.1.0",
    description="Data preparation for ML: clean, consolidate labels, balanced splits, TFT features, MLMD lineage",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "runners", "runners.*"]),
    install_requires=[
        "apache-beam[gcp]==2.62.0",
        "tensorflow-transform==1.16.0",
        "tfx-bsl==1.16.1",
        "ml-metadata==1.16.0",
        "tensorflow-data-validation==1.16.1",   # output.statistics: TFX's ExampleStatistics, in the same job
        "pyarrow==10.0.1",
        "pydantic>=2,<3",
        "pyyaml",
        "vl-convert-python>=1.9,<2",   # report.html's charts: Vega/Vega-Lite to SVG, offline (bundled engine)
        "openlineage-python==1.54.0",  # OpenLineage events of a run (pipeline/openlineage.py), when configured
    ],
    extras_require={
        "test": [
            "pytest",
            "hypothesis",
            "scikit-learn<1.6",
            "joblib<1.5",
            "statsmodels",
            "krippendorff",
            "datasketch",     # the reference of the near-dedup tests
            "crowd-kit",      # the reference of the Dawid-Skene confusion matrices
            "jsonschema",     # OpenLineage events validated against the spec's JSON Schemas
            "referencing",
        ],
    },
    entry_points={"console_scripts": ["dataprep=pipeline.cli:entry"]},
)
