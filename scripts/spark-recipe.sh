#!/usr/bin/env bash
# The Spark recipe of docs/BATCH.md, end to end: PySpark in local mode scores a DataFrame
# with pyspark.ml.functions.predict_batch_udf and the stock tritonclient against a real
# `nereid serve` with a `nereid gateway` in front (tests/spark/test_spark_recipe.py), and
# prints rows, rows/s and wall time for each model it scores.
#
# Installs what it needs: a Java runtime (Debian's default-jre-headless) when `java` is
# missing, the Python venv under .venv with the end-to-end clients, and pyspark[sql]
# (PySpark plus the pandas and pyarrow that predict_batch_udf runs on) into it.
# Uses the built binary: NEREID_BIN, default target/debug/nereid (build it first).
#
#   scripts/spark-recipe.sh                 # simple (built in) and minilm (real embeddings)
#   SPARK_RECIPE_ROWS=20000 scripts/spark-recipe.sh
#   scripts/spark-recipe.sh -k simple       # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

export NEREID_BIN=${NEREID_BIN:-$PWD/target/debug/nereid}
if [[ ! -x $NEREID_BIN ]]; then
  echo "no nereid binary at $NEREID_BIN: build it first (cargo build) or set NEREID_BIN" >&2
  exit 1
fi

echo "== java"
if ! command -v java >/dev/null; then
  SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
  $SUDO apt-get update -q && $SUDO apt-get install -y -q default-jre-headless
fi
java -version 2>&1 | head -1

echo "== python: clients and pyspark"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
if ! .venv/bin/python -c 'import pyspark, pandas, pyarrow' 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check 'pyspark[sql]==4.*'
fi
.venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'
echo "setup: $(($(date +%s) - start)) s"

echo "== spark recipe (pytest)"
# Spark's own log goes to the test's captured output; -s shows the figures as they come.
.venv/bin/python -m pytest -q -s -p no:cacheprovider tests/spark "$@"
echo "spark recipe: $(($(date +%s) - start)) s in all"
