"""The Hugging Face Space: its configuration (``spaces.yaml``), public mode, and ``python -m playground deploy``.

``spaces.yaml`` is the single source of truth: README.md's front matter, the Space's hardware and variables, the
model public mode preloads, the models visitors may pick and the caps enforced on every request all come from it.

- :mod:`~playground.space.policy`: :class:`~playground.space.policy.Policy`, what a client may ask the server for
  (public, shared and local), and the checks every request field shares (``shown``, ``check_encodable``;
  whole numbers go through ``playground.request.check_whole``); ``exposed_by`` says whether other machines can reach the app.
- :mod:`~playground.space.config`: spaces.yaml read and checked (``load_config``, ``SpaceConfig``, ``CAP_KINDS``)
  and README.md's front matter rendered from it (``front_matter``, ``readme_with_front_matter``, ``readme_drift``).
- :mod:`~playground.space.serving`: public mode at start (``is_public``, ``serve_public`` and its fallback).
- :mod:`~playground.space.deploy`: ``python -m playground deploy`` (``upload_files``, ``plan_deploy``, ``deploy``).

No gradio here: ``playground.ui`` wires the policy into the page.
"""
