#!/usr/bin/env bash
# Starts a Spark standalone cluster on 127.0.0.1 from the PyPI pyspark package: a Master, two
# Workers (one core each) and a Spark Connect server on port 15002 that runs its queries on them.
# The server ends each response stream after 5 s (2 min by default), so every longer query in
# CI makes its client reattach until the result is complete.
# Usage: tests/spark_cluster.sh start|stop VENV WORKDIR
set -euo pipefail
action=$1 venv=$2 work=$3
SPARK_HOME=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$work/logs" SPARK_WORKER_DIR="$work/worker"
export PYSPARK_PYTHON="$venv/bin/python"
mkdir -p "$work/logs" "$work/worker"

if [ "$action" = stop ]; then
  for f in "$work"/*.pid; do
    [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  exit 0
fi

wait_port() {
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "port $1 did not open; logs in $work/logs" >&2
  tail -n 30 "$work"/logs/*.log >&2 || true
  return 1
}

start=$(date +%s)
nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
  --host 127.0.0.1 --port 7077 --webui-port 18080 >"$work/logs/master.log" 2>&1 &
echo $! >"$work/master.pid"
wait_port 7077
for i in 1 2; do
  nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --cores 1 --memory 1g --webui-port $((18080 + i)) \
    --work-dir "$work/worker/$i" spark://127.0.0.1:7077 >"$work/logs/worker$i.log" 2>&1 &
  echo $! >"$work/worker$i.pid"
done
nohup "$SPARK_HOME/bin/spark-submit" --master spark://127.0.0.1:7077 \
  --class org.apache.spark.sql.connect.service.SparkConnectServer \
  --name "funnel Spark Connect" \
  --conf spark.connect.grpc.binding.address=127.0.0.1 \
  --conf spark.connect.grpc.binding.port=15002 \
  --conf spark.executor.memory=768m --conf spark.driver.memory=1g \
  --conf spark.sql.shuffle.partitions=4 --conf spark.ui.enabled=false \
  --conf spark.connect.execute.reattachable.senderMaxStreamDuration=5s \
  spark-internal >"$work/logs/connect.log" 2>&1 &
echo $! >"$work/connect.pid"
wait_port 15002
echo "spark cluster up in $(( $(date +%s) - start )) s: master spark://127.0.0.1:7077, 2 workers, connect sc://127.0.0.1:15002"
