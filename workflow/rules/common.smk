# Shared by every rule file: the validated configuration and DAG helpers.

import json
import shlex
import sys

from featlearn import config as featlearn_config
from featlearn import dag

# Rejects a bad configuration before any job is scheduled, naming every bad field.
CONFIG = featlearn_config.validate(config)

# Run the CLI with the interpreter running Snakemake, so jobs use the same environment.
FEATLEARN = f"{shlex.quote(sys.executable)} -m featlearn"

# Every rule file appends the final outputs it contributes; `rule all` requests them.
ALL_TARGETS = []


def code_version(*modules):
    """Rerun trigger for the featlearn code a rule runs (see featlearn.dag)."""
    return dag.code_version(*modules)


def as_json(value):
    """A configuration section as a canonical JSON string (a builtin-typed param)."""
    return json.dumps(value, sort_keys=True)
