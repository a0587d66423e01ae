"""fsmond-notify: the per-user desktop agent (SPEC section 9).

policy.py and wording.py decide (pure); follow.py (fsmond), server.py (the
notification server) and store.py (ignores on disk) do the I/O; agent.py
wires them and is the command.
"""
