"""The control API's OpenAPI document, checked from outside: it is a valid OpenAPI 3 document, and
a property-based tester (schemathesis) sends generated requests to every operation it describes
and finds no server error, no undocumented status and no answer that breaks its schema.

Starts the server binary ($SWITCHBOARD_BIN) on a free port with a virtual clock, the memory store
and its own config; exits non-zero on any failure.
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.request

ADMIN = "openapi-check-admin-token"
CONFIG = f"""
[admin]
token = "{ADMIN}"

[[apps]]
app_id = "0a0a0000-0000-4000-8000-00000000000a"
tenant_id = "0a0a0000-0000-4000-8000-0000000000e1"
client_secret = "openapi-check-secret"
roles = ["Calls.Initiate.All"]

[[parties]]
id = "0a0a0000-0000-4000-8000-0000000000a1"
kind = "user"
behavior = "answer"

[[meetings]]
join_meeting_id = "1234567890"
parties = ["0a0a0000-0000-4000-8000-0000000000a1"]
"""


def main() -> int:
    binary = os.environ["SWITCHBOARD_BIN"]
    venv_bin = os.path.dirname(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "switchboard.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        server = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--store", "memory",
             "--clock", "virtual", "--config", cfg],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "server.log"), "w"), text=True,
        )
        try:
            base = None
            for line in server.stdout:
                if line.startswith("switchboard listening on "):
                    base = line.split()[-1]
                    break
            if base is None:
                print("openapi: the server did not start")
                return 1
            url = f"{base}/_switchboard/v1/openapi.json"
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
            spec = json.load(urllib.request.urlopen(req))
            from openapi_spec_validator import validate
            validate(spec)
            print(f"openapi: the document is valid OpenAPI {spec['openapi']}, "
                  f"{len(spec['paths'])} paths")
            run = subprocess.run(
                [os.path.join(venv_bin, "schemathesis"), "run", url,
                 "-H", f"Authorization: Bearer {ADMIN}",
                 "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance",
                 "--max-examples", "30", "--seed", "20261207"],
            )
            if server.poll() is not None:
                print("openapi: the server exited during the run")
                return 1
            return run.returncode
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
