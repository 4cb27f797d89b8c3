#!/usr/bin/python3
"""The Glance source against a Keystone-protected Glance (fixtures keystone + glance_ks).

Real Keystone and Glance, started by CTest: misses and hits with an application
credential and with password auth; the image endpoint found in the catalog; wrong
credentials refused with a clear error; and no secret in any output of any run.
"""
import json
import os
import subprocess
import sys
import unittest
import urllib.request
import uuid

BIN = os.environ.get("CACHEMGR_BIN", "")
RUN_DIR = os.environ.get("CACHEMGR_TEST_RUN_DIR", "/tmp/cachemgr-test-run")
KS_DIR = os.path.join(RUN_DIR, "keystone")
GLANCE_DIR = os.path.join(RUN_DIR, "glance_ks")
MiB = 1 << 20


def credentials():
    env = {}
    with open(os.path.join(KS_DIR, "credentials.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    return env


CREDS = credentials()
SECRETS = [CREDS["OS_PASSWORD"], CREDS["OS_APPLICATION_CREDENTIAL_SECRET"]]
OUTPUTS = []  # every stdout and stderr of every run, checked for secrets at the end


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


def upload(data):
    endpoint = open(os.path.join(GLANCE_DIR, "endpoint")).read().strip()
    t = token()
    req = urllib.request.Request(endpoint + "/v2/images", method="POST",
                                 data=json.dumps({"name": "ks-test", "disk_format": "raw",
                                                  "container_format": "bare"}).encode(),
                                 headers={"Content-Type": "application/json", "X-Auth-Token": t})
    with urllib.request.urlopen(req, timeout=60) as r:
        image_id = json.load(r)["id"]
    req = urllib.request.Request(endpoint + "/v2/images/%s/file" % image_id, method="PUT",
                                 data=data, headers={"Content-Type": "application/octet-stream",
                                                     "X-Auth-Token": t})
    urllib.request.urlopen(req, timeout=120).read()
    return image_id


class Env:
    def __init__(self, name, auth, endpoint=True):
        self.dir = os.path.join(RUN_DIR, "keystone-test", name)
        os.makedirs(self.dir, exist_ok=True)
        glance = "    endpoint: %s\n" % open(os.path.join(GLANCE_DIR, "endpoint")).read().strip() \
            if endpoint else ""
        glance += "    auth:\n" + "".join("      %s: %s\n" % kv for kv in auth.items())
        self.config = os.path.join(self.dir, "cachemgr.yaml")
        with os.fdopen(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                       "w") as f:
            f.write("index: %s/index.db\nbackend:\n  type: local\n  local:\n    root: %s/cache\n"
                    "source:\n  type: glance\n  glance:\n%sconversion:\n  dir: %s/conv\n"
                    % (self.dir, self.dir, glance, self.dir))

    def run(self, *args):
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("OS_") or k == "CACHEMGR_CONFIG":
                del e[k]
        p = subprocess.run([BIN, "--config", self.config] + list(args), capture_output=True,
                           text=True, env=e, timeout=600)
        OUTPUTS.append(p.stdout + p.stderr)
        return p.returncode, p.stdout, p.stderr


APP = {"auth_url": CREDS["OS_AUTH_URL"],
       "application_credential_id": CREDS["OS_APPLICATION_CREDENTIAL_ID"],
       "application_credential_secret": CREDS["OS_APPLICATION_CREDENTIAL_SECRET"]}
PASSWORD = {"auth_url": CREDS["OS_AUTH_URL"], "username": CREDS["OS_USERNAME"],
            "password": CREDS["OS_PASSWORD"], "user_domain_name": "Default",
            "project_name": CREDS["OS_PROJECT_NAME"], "project_domain_name": "Default",
            "region_name": "RegionOne"}


class KeystoneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = upload(os.urandom(2 * MiB))

    def miss_then_hit(self, env):
        rc, out, err = env.run("--json", "create", self.image, "vol-1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["plan"], "miss")
        rc, out, err = env.run("--json", "create", self.image, "vol-2")
        self.assertEqual(rc, 0, err)
        self.assertNotEqual(json.loads(out)["plan"], "miss")

    def test_application_credential(self):
        self.miss_then_hit(Env("app", APP))

    def test_password_and_catalog_endpoint(self):
        # No endpoint configured: the image endpoint comes from the token's catalog.
        self.miss_then_hit(Env("password", PASSWORD, endpoint=False))

    def test_wrong_secret_refused_clearly(self):
        bad = dict(APP, application_credential_secret="not-the-secret-" + uuid.uuid4().hex)
        rc, _, err = Env("bad", bad).run("create", self.image, "vol-x")
        self.assertNotEqual(rc, 0)
        self.assertIn("Keystone", err)
        self.assertIn("refused the credentials", err)
        self.assertIn(CREDS["OS_APPLICATION_CREDENTIAL_ID"], err)
        self.assertNotIn(bad["application_credential_secret"], err)

    def test_unknown_region_names_the_catalog(self):
        env = Env("region", dict(PASSWORD, region_name="Nowhere"), endpoint=False)
        rc, _, err = env.run("create", self.image, "vol-r")
        self.assertNotEqual(rc, 0)
        self.assertIn("catalog has no image endpoint", err)
        self.assertIn("Nowhere", err)

    @classmethod
    def tearDownClass(cls):
        for out in OUTPUTS:
            for secret in SECRETS:
                assert secret not in out, "a secret appears in cachemgr's output"


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
