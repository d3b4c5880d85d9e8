"""Exceptions that end an attempt."""


class AgentFailure(Exception):
    """The attempt cannot go on (bad bundle, unresolvable secret, ...); the message says why and
    becomes the status message of a `failed` attempt."""
