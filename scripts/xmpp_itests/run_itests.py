"""Run slixmpp's own integration tests (`itests/` of the slixmpp source
distribution) against one XMPP server on a given host and port, with
plain TCP (no STARTTLS) so that a local prosody and a local imgate are
measured the same way. Prints one line per test and a closing
"N passed, M failed" line; writes the per-test results as JSON.

usage: run_itests.py ITESTS_DIR HOST PORT ROOM RESULTS_JSON
Accounts come from CI_ACCOUNT1/CI_ACCOUNT1_PASSWORD, CI_ACCOUNT2/...,
CI_MUC_SERVER (as the itests read them). ROOM replaces the random room
name of the MUC tests so that a server whose rooms are made by an
administrator (imgate: groups) can have it ready."""

import asyncio
import importlib
import json
import logging
import sys
import unittest
from pathlib import Path

from slixmpp.test import integration


def patch(host, port):
    original_add = integration.SlixIntegration.add_client

    def add_client(self, jid, password):
        original_add(self, jid, password)
        c = self.clients[-1]
        c.enable_starttls = False
        c.enable_direct_tls = False
        c.enable_plaintext = True
        c.plugin["feature_mechanisms"].unencrypted_plain = True
        c.plugin["feature_mechanisms"].unencrypted_scram = True

    async def connect_clients(self):
        for c in self.clients:
            c.connect(host, int(port))
        await asyncio.wait_for(
            asyncio.gather(*[c.wait_until("session_start") for c in self.clients]), 15
        )

    integration.SlixIntegration.add_client = add_client
    integration.SlixIntegration.connect_clients = connect_clients


def main(itests_dir, host, port, room, results_path):
    logging.disable(100)
    patch(host, port)
    root = Path(itests_dir).resolve()
    sys.path.insert(0, str(root.parent))
    suites = []
    for f in sorted(root.glob("test_*.py")):
        module = importlib.import_module(f"{root.name}.{f.stem}")
        if hasattr(module, "UNIQUE"):
            module.UNIQUE = room
        suites.append(module.suite)
    results = {}

    class Recorder(unittest.TextTestResult):
        def addSuccess(self, test):
            super().addSuccess(test)
            results[test.id()] = "pass"

        def addFailure(self, test, err):
            super().addFailure(test, err)
            results[test.id()] = "fail"

        def addError(self, test, err):
            super().addError(test, err)
            results[test.id()] = "error"

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            results[test.id()] = "skip"

    # A test that hangs is a failure, not a stuck run.
    original_run = unittest.IsolatedAsyncioTestCase._callTestMethod

    def bounded(self, method):
        async def within_limit():
            return await asyncio.wait_for(method(), 20)

        # A coroutine function, so that the runner awaits it.
        return self._callMaybeAsync(within_limit)

    unittest.IsolatedAsyncioTestCase._callTestMethod = bounded
    runner = unittest.TextTestRunner(verbosity=2, resultclass=Recorder, stream=sys.stdout)
    runner.run(unittest.TestSuite(suites))
    unittest.IsolatedAsyncioTestCase._callTestMethod = original_run
    Path(results_path).write_text(json.dumps(results, indent=1, sort_keys=True))
    passed = sum(1 for v in results.values() if v == "pass")
    print(f"{passed} passed, {len(results) - passed} failed")


if __name__ == "__main__":
    main(*sys.argv[1:])
