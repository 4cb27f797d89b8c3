"""Helpers of the tests that run against the keystone and glance_ks fixtures.

credentials(): the OS_* variables keystone-start.sh wrote; upload(): a raw image into
the Keystone-protected Glance; Env: a cachemgr config (local backend, Glance source)
in its own folder, run with no OS_* variable but those a test gives, every output kept
in OUTPUTS so a test can check that no secret ever appears.
"""
import json
import os
import shutil
import subprocess
import urllib.request

BIN = os.environ.get("CACHEMGR_BIN", "")
RUN_DIR = os.environ.get("CACHEMGR_TEST_RUN_DIR", "/tmp/cachemgr-test-run")
KS_DIR = os.path.join(RUN_DIR, "keystone")
GLANCE_DIR = os.path.join(RUN_DIR, "glance_ks")
MiB = 1 << 20
OUTPUTS = []  # every stdout and stderr of every run


def read(path):
    with open(path) as f:
        return f.read().strip()


def credentials():
    env = {}
    with open(os.path.join(KS_DIR, "credentials.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    return env


CREDS = credentials()
SECRETS = [CREDS["OS_PASSWORD"], CREDS["OS_APPLICATION_CREDENTIAL_SECRET"]]
GLANCE = read(os.path.join(GLANCE_DIR, "endpoint"))
APP = {"auth_url": CREDS["OS_AUTH_URL"],
       "application_credential_id": CREDS["OS_APPLICATION_CREDENTIAL_ID"],
       "application_credential_secret": CREDS["OS_APPLICATION_CREDENTIAL_SECRET"]}
PASSWORD = {"auth_url": CREDS["OS_AUTH_URL"], "username": CREDS["OS_USERNAME"],
            "password": CREDS["OS_PASSWORD"], "user_domain_name": "Default",
            "project_name": CREDS["OS_PROJECT_NAME"], "project_domain_name": "Default",
            "region_name": "RegionOne"}


def token():
    body = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {
                                      "id": CREDS["OS_APPLICATION_CREDENTIAL_ID"],
                                      "secret": CREDS["OS_APPLICATION_CREDENTIAL_SECRET"]}}}}
    req = urllib.request.Request(CREDS["OS_AUTH_URL"] + "/auth/tokens",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers["X-Subject-Token"]


def upload(data, name="ks-test", disk_format="raw"):
    t = token()
    req = urllib.request.Request(GLANCE + "/v2/images", method="POST",
                                 data=json.dumps({"name": name, "disk_format": disk_format,
                                                  "container_format": "bare"}).encode(),
                                 headers={"Content-Type": "application/json", "X-Auth-Token": t})
    with urllib.request.urlopen(req, timeout=60) as r:
        image_id = json.load(r)["id"]
    req = urllib.request.Request(GLANCE + "/v2/images/%s/file" % image_id, method="PUT",
                                 data=data, headers={"Content-Type": "application/octet-stream",
                                                     "X-Auth-Token": t})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
    return image_id


class Env:
    """A config in RUN_DIR/<group>/<name>: `glance` holds source.glance's keys (None:
    the endpoint of glance_ks and nothing else), `auth` its auth section (None: none)."""

    def __init__(self, group, name, auth=None, glance=None, mode=0o600, extra=""):
        self.dir = os.path.join(RUN_DIR, group, name)
        shutil.rmtree(self.dir, ignore_errors=True)  # a fresh start on every run
        os.makedirs(self.dir)
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home, exist_ok=True)
        glance = {"endpoint": GLANCE} if glance is None else glance
        text = "".join("    %s: %s\n" % kv for kv in glance.items())
        if auth is not None:
            text += "    auth:\n" + "".join("      %s: %s\n" % kv for kv in auth.items())
        self.config = os.path.join(self.dir, "cachemgr.yaml")
        if os.path.exists(self.config):
            os.unlink(self.config)
        with os.fdopen(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
            f.write("index: %s/index.db\nbackend:\n  type: local\n  local:\n    root: %s/cache\n"
                    "source:\n  type: glance\n  glance:\n%sconversion:\n  dir: %s/conv\n%s"
                    % (self.dir, self.dir, text, self.dir, extra))
        os.chmod(self.config, mode)

    def run(self, *args, env=None, timeout=600):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("OS_") or k == "CACHEMGR_CONFIG":
                del e[k]
        e["HOME"] = self.home
        e.update(env or {})
        p = subprocess.run([BIN, "--config", self.config] + list(args), capture_output=True,
                           text=True, env=e, timeout=timeout, cwd=self.dir)
        OUTPUTS.append(p.stdout + p.stderr)
        return p.returncode, p.stdout, p.stderr

    def cached(self):
        """The entries in the index and the files under the cache root but its mark."""
        rc, out, err = self.run("--json", "list")
        assert rc == 0, err
        files = []
        for root, _, names in os.walk(os.path.join(self.dir, "cache")):
            files += [os.path.join(root, n) for n in names if n != ".cachemgr-root"]
        return json.loads(out), files


def assert_no_secret():
    for out in OUTPUTS:
        for secret in SECRETS:
            assert secret not in out, "a secret appears in cachemgr's output:\n" + out
