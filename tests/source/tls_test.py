#!/usr/bin/python3
"""The Glance source over https (fixtures keystone + glance_ks, an https front made here).

Certificates are made at test time: a CA, and server certificates that are right,
expired, or for another host name; a second CA that signed none of them. The right CA
works (misses and hits, Keystone over https too, its CA from a clouds.yaml); a wrong
CA, no CA (the system's do not know ours), an expired certificate, a name mismatch and
a missing client certificate are refused with an error naming the endpoint and the
reason, and nothing is cached from a refused connection.
"""
import json
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import openstack  # noqa: E402
from front import Front, Pki  # noqa: E402
from openstack import APP, CREDS, GLANCE, MiB, RUN_DIR, Env  # noqa: E402

GROUP = "tls-test"
PKI_DIR = os.path.join(RUN_DIR, GROUP, "pki")


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(PKI_DIR, ignore_errors=True)
        os.makedirs(PKI_DIR)
        cls.ca = Pki(PKI_DIR, "test")
        cls.other_ca = Pki(PKI_DIR, "other")
        cls.good = cls.ca.issue("good")
        cls.expired = cls.ca.issue("expired", days=(-10, -1))
        cls.mismatch = cls.ca.issue("mismatch", hosts=("glance.example.org",))
        cls.client = cls.ca.issue("client", hosts=(), client=True)
        cls.image = openstack.upload(os.urandom(2 * MiB), name="tls-test")
        cls.fronts = []

    @classmethod
    def tearDownClass(cls):
        for f in cls.fronts:
            f.stop()
        openstack.assert_no_secret()

    def front(self, cert, upstream=GLANCE, client_ca=None):
        f = Front(upstream, cert=cert[0], key=cert[1], client_ca=client_ca)
        self.fronts.append(f)
        return f

    def create_twice(self, env):
        plans = []
        for vol in ("vol-1", "vol-2"):
            rc, out, err = env.run("--json", "create", self.image, vol)
            self.assertEqual(rc, 0, err)
            plans.append(json.loads(out)["plan"])
        self.assertEqual(plans[0], "miss")
        self.assertNotEqual(plans[1], "miss")

    def refused(self, name, front, reason, glance_extra=None):
        glance = {"endpoint": front.url, "retries": 0}
        glance.update(glance_extra or {})
        env = Env(GROUP, name, APP, glance=glance)
        rc, _, err = env.run("create", self.image, "vol-1")
        self.assertNotEqual(rc, 0, err)
        self.assertIn(front.url, err, "the error names the endpoint")
        self.assertIn(reason, err)
        self.assertIn("TLS", err, "the error says what to check")
        self.assertEqual(env.cached(), ([], []), "nothing cached from a refused connection")
        self.assertEqual([r for r in front.requests if r[1].startswith("/v2/")], [])
        return err

    def test_right_ca_works(self):
        f = self.front(self.good)
        self.create_twice(Env(GROUP, "right-ca", APP,
                              glance={"endpoint": f.url, "ca_file": self.ca.path}))

    def test_wrong_ca_is_refused(self):
        self.refused("wrong-ca", self.front(self.good), "certificate",
                     {"ca_file": self.other_ca.path})

    def test_no_ca_file_uses_the_system_cas_which_do_not_know_ours(self):
        self.refused("system-ca", self.front(self.good), "certificate")

    def test_expired_certificate_is_refused(self):
        self.refused("expired", self.front(self.expired), "expired", {"ca_file": self.ca.path})

    def test_host_name_mismatch_is_refused(self):
        err = self.refused("mismatch", self.front(self.mismatch), "127.0.0.1",
                           {"ca_file": self.ca.path})
        self.assertIn("name", err)

    def test_client_certificate(self):
        f = self.front(self.good, client_ca=self.ca.path)
        env = Env(GROUP, "no-client-cert", APP,
                  glance={"endpoint": f.url, "ca_file": self.ca.path, "retries": 0})
        rc, _, err = env.run("create", self.image, "vol-1")
        self.assertNotEqual(rc, 0, err)
        self.assertIn(f.url, err)
        self.assertEqual(env.cached(), ([], []))
        self.create_twice(Env(GROUP, "client-cert", APP, glance={
            "endpoint": f.url, "ca_file": self.ca.path, "client_cert": self.client[0],
            "client_key": self.client[1]}))

    def test_keystone_over_https_with_the_ca_of_a_clouds_yaml(self):
        ks = self.front(self.good, upstream=CREDS["OS_AUTH_URL"].rsplit("/v3", 1)[0])
        glance = self.front(self.good)
        env = Env(GROUP, "cloud-ca", glance={"endpoint": glance.url, "cloud": "tls"})
        with os.fdopen(os.open(os.path.join(env.dir, "clouds.yaml"),
                               os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("clouds:\n  tls:\n    cacert: %s\n    auth_type: v3applicationcredential\n"
                    "    auth:\n      auth_url: %s/v3\n      application_credential_id: %s\n"
                    "      application_credential_secret: %s\n"
                    % (self.ca.path, ks.url, APP["application_credential_id"],
                       APP["application_credential_secret"]))
        self.create_twice(env)
        self.assertTrue(any(r[1].endswith("/auth/tokens") for r in ks.requests),
                        "the token came through the https front")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
