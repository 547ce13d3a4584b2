"""Playbook replay: bring the service back up on the chosen host, from the verified export.

- ``playbook``: the YAML format, read and validated before anything runs
  (every problem is one ``ConfigError`` naming ``file:line:column`` and the fix);
- ``templating``: Jinja2's sandboxed environment with ``StrictUndefined``, and
  the redactor that scrubs secret values from everything that leaves a step;
- ``secrets`` and ``artifacts``: secrets by reference into the exported,
  age-encrypted bundle; artifacts by manifest key, checked by sha256 before use;
- ``ops``: the operations, each check -> apply -> verify with facts read
  when it runs, and the undo it records before it changes anything;
- ``runner``: the journaled replay of one playbook on one host (resume at the
  failed step, handlers that survive a failure, retries, check and diff);
- ``steps``: the run's ``replay`` and ``verify-service`` steps, and the engine
  side of ``exitplan replay``.
"""
