"""Unit tests of the agent's modules on their own: `python3 -m unittest discover -s src/agent/tests -t src/agent`
(run by test/agent/python-units.test.ts under vitest)."""
