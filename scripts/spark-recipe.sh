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
# Spark 4 needs Java 17 or later: Debian bookworm's default-jre-headless is 17.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null || (($(java_major) < 17)); then
  SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
  $SUDO apt-get update -q && $SUDO apt-get install -y -q default-jre-headless
  if (($(java_major) < 17)); then
    $SUDO apt-get install -y -q openjdk-17-jre-headless
    export JAVA_HOME=$(dirname "$(dirname "$(readlink -f /usr/lib/jvm/java-17-openjdk-*/bin/java)")")
    export PATH=$JAVA_HOME/bin:$PATH
  fi
fi
java -version 2>&1 | head -1

echo "== python: clients and pyspark"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
if ! .venv/bin/python -c 'import pyspark, pandas, pyarrow' 2>/dev/null; then
  # pandas < 3: PySpark 4 warns that it does not fully support pandas 3 yet.
  .venv/bin/python -m pip install -q --disable-pip-version-check 'pyspark[sql]==4.*' 'pandas<3'
fi
.venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'
echo "setup: $(($(date +%s) - start)) s"

echo "== spark recipe (pytest)"
# -s shows each test's figures (a `SPARK_RECIPE {json}` line) as they come.
export SPARK_RECIPE_RESULTS
SPARK_RECIPE_RESULTS=$(mktemp)
trap 'rm -f "$SPARK_RECIPE_RESULTS"' EXIT
status=0
.venv/bin/python -m pytest -q -s -p no:cacheprovider tests/spark "$@" || status=$?

echo "== figures ($(nproc) cores, $(date -u +%Y-%m-%d), $(basename "$NEREID_BIN") from ${NEREID_BIN#"$PWD"/})"
.venv/bin/python - "$SPARK_RECIPE_RESULTS" <<'PY'
import json, sys
print(f"{'model':8} {'door':13} {'rows':>6} {'scoring s':>9} {'rows/s':>8}  rows per engine")
for line in open(sys.argv[1]):
    f = json.loads(line)
    print(f"{f['model']:8} {f['url']:13} {f['rows']:>6} {f['seconds']:>9} {f['rows_per_s']:>8}  {f['rows_per_engine']}")
PY
echo "spark recipe: $(($(date +%s) - start)) s in all"
exit $status
