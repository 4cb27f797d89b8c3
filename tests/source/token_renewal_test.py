#!/usr/bin/python3
"""Tokens that expire while the tool works (fixtures keystone + glance_ks).

The test Keystone issues tokens that live 40 s ([token] expiration; shorter lives leave
too little time for a loaded Glance to validate them). Two long runs go side by side
for over two minutes, three lifetimes and more:
  - `cachemgr prefill` of five images through a front that slows Glance's answers to
    128 KiB/s, one image at a time (about 24 s each);
  - the embedding example (examples/embed) making a volume every 5 s with one cache
    object, as a long-running service does.
Neither may fail; both must have renewed their token (their info log says so), and
no secret appears in their output.
"""
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import openstack  # noqa: E402
from front import Front  # noqa: E402
from openstack import APP, GLANCE, MiB, Env  # noqa: E402

GROUP = "token-renewal-test"
EMBED = os.environ.get("CACHEMGR_EMBED", "")
LIFETIME_S = 40


class TokenRenewalTest(unittest.TestCase):
    def test_long_prefill_and_service_outlive_several_tokens(self):
        images = [openstack.upload(os.urandom(3 * MiB), name="renewal-%d" % i) for i in range(6)]
        front = Front(GLANCE, rate_kib=128)
        try:
            prefill = Env(GROUP, "prefill", APP, glance={"endpoint": front.url,
                                                         "min_rate_kib_s": 16})
            # Every hit asks Glance whether the image changed: every volume needs a token.
            service = Env(GROUP, "service", APP, extra="cache:\n  source_check_interval_s: 0\n")
            env = dict(os.environ, HOME=service.home)
            for k in list(env):
                if k.startswith("OS_"):
                    del env[k]
            start = time.monotonic()
            embed = subprocess.Popen([EMBED, service.config, images[5], "26", "svc", "0", "5000"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
            rc, out, err = prefill.run("--log-level", "info", "prefill", "-j", "1", *images[:5],
                                       timeout=900)
            e_out, e_err = embed.communicate(timeout=900)
            elapsed = time.monotonic() - start
            openstack.OUTPUTS.append(e_out + e_err)
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(embed.returncode, 0, e_out + e_err)
            self.assertGreater(elapsed, 3 * LIFETIME_S, "the runs outlived three tokens")
            # Every image of the prefill is ready, every volume of the service was made.
            entries, _ = prefill.cached()
            self.assertEqual(sorted(e["image_id"] for e in entries if e["state"] == "ready"),
                             sorted(images[:5]))
            self.assertEqual(len(re.findall(r"^svc-\d+ ", e_out, re.M)), 26, e_out)
            for log in (err, e_err):
                self.assertGreaterEqual(log.count("keystone token renewal"), 2, log[-3000:])
        finally:
            front.stop()

    @classmethod
    def tearDownClass(cls):
        openstack.assert_no_secret()


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
