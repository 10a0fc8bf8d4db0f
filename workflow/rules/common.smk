# Shared by every rule file: the validated configuration and DAG helpers.

import os
import sys

from featlearn import config as featlearn_config
from featlearn.dag import as_json, code_version

# Rejects a bad configuration before any job is scheduled, naming every bad field.
CONFIG = featlearn_config.validate(config)

# Jobs run the `featlearn` command of the environment running Snakemake (also when it
# was started as .venv/bin/snakemake without activating the environment).
SEARCH_PATH = os.environ["PATH"]
os.environ["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{SEARCH_PATH}"

# Every rule file appends the final outputs it contributes; `rule all` requests them.
ALL_TARGETS = []
