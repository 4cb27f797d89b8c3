#!/usr/bin/python3
"""The Glance source against a Keystone-protected Glance (fixtures keystone + glance_ks).

Real Keystone and Glance, started by CTest: misses and hits with an application
credential, with password auth and through a named cloud of a clouds.yaml (by $OS_CLOUD
and by source.glance.cloud, a secure.yaml holding the secret); the image endpoint found
in the catalog; a 401 answered by one new token, a second 401 a clear error; wrong
credentials and unknown clouds refused clearly; doctor's checks; and no secret in any
output of any run, logs at debug level included.
"""
import json
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import openstack  # noqa: E402
from front import Front  # noqa: E402
from openstack import APP, CREDS, GLANCE, MiB, PASSWORD, Env  # noqa: E402

GROUP = "keystone-test"


def write_clouds(path, clouds, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = ["clouds:"]
    for name, cloud in clouds.items():
        lines.append("  %s:" % name)
        for k, v in cloud.items():
            if isinstance(v, dict):
                lines.append("    %s:" % k)
                lines += ["      %s: %s" % kv for kv in v.items()]
            else:
                lines.append("    %s: %s" % (k, v))
    if os.path.exists(path):
        os.unlink(path)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, mode)
    return path


def checks(out):
    return {c["name"]: c for c in json.loads(out)["checks"]}


class KeystoneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = openstack.upload(os.urandom(2 * MiB))

    def miss_then_hit(self, cfg, **kw):
        rc, out, err = cfg.run("--json", "--log-level", "debug", "create", self.image, "vol-1",
                               **kw)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["plan"], "miss")
        rc, out, err = cfg.run("--json", "create", self.image, "vol-2", **kw)
        self.assertEqual(rc, 0, err)
        self.assertNotEqual(json.loads(out)["plan"], "miss")

    def test_application_credential(self):
        self.miss_then_hit(Env(GROUP, "app", APP))

    def test_password_and_catalog_endpoint(self):
        # No endpoint configured: the image endpoint comes from the token's catalog.
        env = Env(GROUP, "password", PASSWORD, glance={})
        self.miss_then_hit(env)
        rc, out, err = env.run("--json", "doctor")
        self.assertEqual(rc, 0, out + err)
        source = checks(out)["source"]
        self.assertIn("endpoint from the catalog", source["detail"])
        self.assertIn(GLANCE, source["detail"])
        self.assertIn("user " + CREDS["OS_USERNAME"], source["detail"])

    def test_named_cloud_from_os_cloud(self):
        # The operators' convention: $OS_CLOUD names a cloud of
        # ~/.config/openstack/clouds.yaml; password auth, region and interface from it.
        env = Env(GROUP, "os-cloud", glance={})
        write_clouds(os.path.join(env.home, ".config/openstack/clouds.yaml"), {
            "other": {"auth": {"auth_url": "http://127.0.0.1:9/v3", "username": "x",
                               "password": "y"}},
            "mycloud": {"auth": {k: v for k, v in PASSWORD.items() if k != "region_name"},
                        "region_name": "RegionOne", "interface": "public",
                        "identity_api_version": 3}})
        self.miss_then_hit(env, env={"OS_CLOUD": "mycloud"})

    def test_named_cloud_from_config_with_secure_yaml(self):
        # source.glance.cloud names it; clouds.yaml in the working folder, its secret in a
        # secure.yaml (openstacksdk's split) under ~/.config/openstack.
        env = Env(GROUP, "config-cloud", glance={"cloud": "svc"})
        write_clouds(os.path.join(env.dir, "clouds.yaml"), {
            "svc": {"auth_type": "v3applicationcredential",
                    "auth": {"auth_url": CREDS["OS_AUTH_URL"],
                             "application_credential_id": APP["application_credential_id"]}}})
        write_clouds(os.path.join(env.home, ".config/openstack/secure.yaml"), {
            "svc": {"auth": {"application_credential_secret":
                             APP["application_credential_secret"]}}}, mode=0o644)
        self.miss_then_hit(env)
        # doctor: secure.yaml holds a secret and is world-readable: a warning naming it.
        rc, out, err = env.run("--json", "doctor")
        self.assertEqual(rc, 0, out + err)
        c = checks(out)["secret files"]
        self.assertTrue(c["ok"] and c["warning"], c)
        self.assertIn("secure.yaml (mode 644)", c["detail"])
        self.assertNotIn("clouds.yaml (mode", c["detail"])
        self.assertIn("chmod 600", c["fix"])

    def test_unknown_cloud_is_a_config_error(self):
        env = Env(GROUP, "no-cloud", glance={})
        path = write_clouds(os.path.join(env.home, ".config/openstack/clouds.yaml"),
                            {"a": {"auth": {"auth_url": "http://127.0.0.1:9/v3"}}})
        rc, _, err = env.run("create", self.image, "vol-x", env={"OS_CLOUD": "nope"})
        self.assertEqual(rc, 2, err)
        self.assertIn(path, err)
        self.assertIn("no cloud 'nope'", err)
        self.assertIn("it has: a", err)
        os.unlink(path)
        rc, _, err = env.run("create", self.image, "vol-x", env={"OS_CLOUD": "nope"})
        self.assertEqual(rc, 2, err)
        self.assertIn("$OS_CLOUD names cloud 'nope', but no clouds.yaml was found", err)
        self.assertEqual(env.cached(), ([], []))

    def test_cloud_that_turns_off_tls_verification_is_refused(self):
        env = Env(GROUP, "no-verify", glance={"cloud": "c"})
        write_clouds(os.path.join(env.dir, "clouds.yaml"),
                     {"c": {"verify": "false", "auth": APP}})
        rc, _, err = env.run("list")
        self.assertEqual(rc, 2, err)
        self.assertIn("always verifies TLS", err)

    def test_wrong_secret_refused_clearly(self):
        bad = dict(APP, application_credential_secret="not-the-secret-" + uuid.uuid4().hex)
        env = Env(GROUP, "bad", bad)
        rc, _, err = env.run("create", self.image, "vol-x")
        self.assertNotEqual(rc, 0)
        self.assertIn("Keystone at " + CREDS["OS_AUTH_URL"], err)
        self.assertIn("refused the credentials", err)
        self.assertIn(CREDS["OS_APPLICATION_CREDENTIAL_ID"], err)
        self.assertNotIn(bad["application_credential_secret"], err)
        self.assertEqual(env.cached(), ([], []))
        rc, out, _ = env.run("--json", "doctor")
        self.assertEqual(rc, 1)
        self.assertFalse(checks(out)["source"]["ok"])
        self.assertNotIn(bad["application_credential_secret"], out)

    def test_unknown_region_names_the_catalog(self):
        env = Env(GROUP, "region", dict(PASSWORD, region_name="Nowhere"), glance={})
        rc, _, err = env.run("create", self.image, "vol-r")
        self.assertNotEqual(rc, 0)
        self.assertIn("catalog has no image endpoint", err)
        self.assertIn("Nowhere", err)

    def test_a_401_is_answered_by_one_new_token(self):
        # Glance refuses the first token (revoked, say): one new token, and the create
        # goes on. Refusing every token: the second 401 is the error, no third try.
        front = Front(GLANCE, reject=1)
        try:
            env = Env(GROUP, "reauth-once", APP, glance={"endpoint": front.url})
            self.miss_then_hit(env)
            refused, retried = [r for r in front.requests if r[1].startswith("/v2/")][:2]
            self.assertNotEqual(refused[2], retried[2], "the retry carries a new token")
        finally:
            front.stop()
        front = Front(GLANCE, reject=-1)
        try:
            env = Env(GROUP, "reauth-fails", APP, glance={"endpoint": front.url})
            rc, _, err = env.run("create", self.image, "vol-1")
            self.assertEqual(rc, 1, err)
            self.assertIn("Glance refused the credentials (HTTP 401)", err)
            asked = [r for r in front.requests if r[1].startswith("/v2/")]
            self.assertEqual(len(asked), 2, asked)
            self.assertNotEqual(asked[0][2], asked[1][2])
            self.assertEqual(env.cached(), ([], []))
        finally:
            front.stop()

    def test_doctor_warns_of_a_readable_config_holding_a_secret(self):
        env = Env(GROUP, "loose", PASSWORD, mode=0o640)
        rc, out, err = env.run("--json", "doctor")
        self.assertEqual(rc, 0, out + err)
        c = checks(out)["secret files"]
        self.assertTrue(c["warning"], c)
        self.assertIn(env.config + " (mode 640)", c["detail"])
        self.assertIn("chmod 600 " + env.config, c["fix"])
        self.assertIn("authenticated at", checks(out)["source"]["detail"])
        rc, out, err = env.run("doctor")  # the text form says WARN
        self.assertIn("WARN secret files", out)
        os.chmod(env.config, 0o600)
        rc, out, err = env.run("--json", "doctor")
        c = checks(out)["secret files"]
        self.assertFalse(c["warning"], c)
        self.assertIn("readable by their owner alone", c["detail"])

    @classmethod
    def tearDownClass(cls):
        openstack.assert_no_secret()


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
