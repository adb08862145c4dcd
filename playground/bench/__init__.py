"""Benchmarks: ``python -m playground bench`` prints readable lines, then one JSON line of ratios.

Every ratio compares two things measured in the same run on the same machine, so it holds on a noisy machine
where absolute times do not.

- :mod:`~playground.bench.run`: ``python -m playground bench``: every part below, its lines and its JSON.
- :mod:`~playground.bench.processors`: one logits-processor call at a real vocabulary size, our ramp against the
  article's literal ``EosTokenRewardLogitsProcessor``.
- :mod:`~playground.bench.decoding`: the side-by-side engine against plain ``generate()`` with the embedded model
  (EOS banned so every run has the same length), greedy and sampled, with 1 and 2 torch threads, naming the CPU
  and the decode kernels measured fastest on it; the loop's per-step CPU work for 64 rows beside the forward
  pass; base + a LoRA adapter in one run.
- :mod:`~playground.bench.ui`: the app served in its own process, and what reaches its clients: a
  ``gradio_client`` consumer against the engine, the REST stream's bytes, eight clients at once against one.
- :mod:`~playground.bench.page`: the page in headless Chromium, its decode speed and the bytes it receives.
- :mod:`~playground.bench.evaluate` and :mod:`~playground.bench.finetune`: an evaluation and the fine-tune lab
  against plain loops.
- :mod:`~playground.bench.device`: ``bench --device cuda|cpu``, concurrent runs as the app serves them.
- :mod:`~playground.bench.common`: what several parts share: the prompt, the equal-length columns, the timing
  helpers and the app served in its own process.
"""
