"""``aod-ops[airflow]`` without the engine: what the scheduler, dag-processor, triggerer and API
server do works with torch, Ray, GX and the rest of the engine made unimportable.

One subprocess blocks the engine's modules with a ``sys.meta_path`` finder, then parses the DAG
folder as the dag-processor does, imports the provider's modules, runs a serialized-and-rebuilt
``RayJobTrigger`` against a Jobs REST API served on loopback, and runs ``aod --help`` and an
``aod`` command that needs the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The engine's modules that the Airflow components must do without.
BLOCKED = (
    "torch",
    "ray",
    "great_expectations",
    "transformers",
    "sdmetrics",
    "sklearn",
    "matplotlib",
    "accelerate",
    "safetensors",
    "gguf",
    "genson",
    "s3fs",
)

CHECK = r"""
import asyncio
import contextlib
import importlib
import importlib.abc
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCKED = frozenset(sys.argv[1].split(","))
ROOT = sys.argv[2]


class NoEngine(importlib.abc.MetaPathFinder):
    # As if the package were not installed: the error names the top-level package, as Python's does.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None


sys.meta_path.insert(0, NoEngine())
result = {}

# The dag-processor's parse.
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=os.path.join(ROOT, "dags"))
result["import_errors"] = {str(k): str(v)[-500:] for k, v in bag.import_errors.items()}
dag = bag.dags.get("aod_synthesis")
result["tasks"] = sorted(t.task_id for t in dag.tasks) if dag else None

import aod_ops.airflow.hooks
import aod_ops.airflow.operators
import aod_ops.airflow.triggers

result["aod_ops_from"] = os.path.dirname(os.path.dirname(aod_ops.__file__))

# A Jobs REST API on loopback: the job is RUNNING, then SUCCEEDED.
seen = []


class JobsAPI(BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path != "/api/jobs/aod-light-1":
            self.send_error(404, f"Job {self.path} does not exist")
            return
        status = "RUNNING" if len(seen) == 1 else "SUCCEEDED"
        body = json.dumps({"submission_id": "aod-light-1", "status": status, "message": "Job finished."})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), JobsAPI)
threading.Thread(target=server.serve_forever, daemon=True).start()
conn = {"conn_type": "aod_ray", "host": f"http://127.0.0.1:{server.server_port}", "password": "light-token"}
os.environ["AIRFLOW_CONN_AOD_RAY_LIGHT"] = json.dumps(conn)

# The operator serializes the trigger; the triggerer rebuilds it from its class path and runs it.
trigger = aod_ops.airflow.triggers.RayJobTrigger("aod_ray_light", "aod-light-1", poll_interval=0.01)
path, kwargs = trigger.serialize()
module, _, name = path.rpartition(".")
rebuilt = getattr(importlib.import_module(module), name)(**kwargs)


async def first_event():
    async for event in rebuilt.run():
        return event.payload
    return None


result["event"] = asyncio.run(first_event())
result["requests"] = seen
server.shutdown()

from aod_ops.cli import main

with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit as exit:
        result["help_exit"] = exit.code
result["help_starts"] = out.getvalue()[:40]
with contextlib.redirect_stderr(io.StringIO()) as err:
    schema = os.path.join(ROOT, "examples", "schemas", "cars.json")
    result["generate_exit"] = main(["generate", "--schema", schema, "-n", "1"])
result["generate_stderr"] = err.getvalue()

result["engine_loaded"] = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print("RESULT " + json.dumps(result))
"""


def test_the_dag_the_trigger_and_the_cli_work_without_the_engine(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AOD_SPEC": str(tmp_path / "missing.yaml"),  # parsing must not read it
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHECK, ",".join(BLOCKED), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    assert result["aod_ops_from"] == str(ROOT)  # this checkout, not another installed copy
    assert result["import_errors"] == {}
    assert result["tasks"] == [
        "partition.optimize",
        "partition.synthesize",
        "partition.validate",
        "plan",
        "summary",
    ]
    assert result["event"] == {
        "status": "success",
        "job_id": "aod-light-1",
        "job_status": "SUCCEEDED",
        "message": "Job finished.",
    }
    assert result["requests"] == [["GET", "/api/jobs/aod-light-1", "Bearer light-token"]] * 2
    assert result["help_exit"] == 0
    assert result["help_starts"].startswith("usage: aod ")
    assert result["generate_exit"] == 2
    assert result["generate_stderr"] == (
        "aod generate: error: this command needs the engine: pip install 'aod-ops[engine]' "
        "(no module named torch)\n"
    )
    assert result["engine_loaded"] == []
