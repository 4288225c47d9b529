"""agents: a self-correcting translation agent (draft, critique, revise, stop), every step traced.

Floors: agents builds on core_seq2seq (the ``Translator`` interface and its search), evals (every
metric) and inference_compute (MBR, reranking features). Nothing below imports agents.

Modules, one concern each:

* ``lexicon``  - a bilingual word lexicon learned from the parallel training data (IBM Model 1).
* ``critic``   - reference-free signals about one hypothesis, and thresholds that turn them into flags.
* ``tools``    - ways to revise a hypothesis: wider beam, sample and rerank, MBR, constrained re-decoding,
  the refiner's rewrite.
* ``refiner``  - the learned refiner ("source ||| draft" -> reference): its training pairs, and its view
  (n-best rewrites, log-probs) shared by the critic and the tools.
* ``policy``   - which tool next, when a revision replaces the current hypothesis (rule-based by
  default, behind a ``Policy`` interface).
* ``gate``     - a learned acceptance gate (logistic regression fitted on a val trace) that vetoes
  revisions unlikely to raise sentence chrF++.
* ``loop``     - the batched agent loop: step budget, stop rule, exact cost per sentence.
* ``escalate`` - the escalating agent: a cheap draft, costlier rungs only where the policy says
  they pay, under a FLOP budget per sentence and per corpus (rule-based or learned policy).
* ``curve``    - the escalating agent tuned on val at several budgets: its BLEU-vs-compute curve.
* ``run``      - building an agent from its config; running it chunk by chunk, resumable.
* ``trace``    - one JSONL record per sentence, resumable; ``explain`` renders one readably.
* ``report``   - draft vs final: BLEU/chrF, fix/harm rates, cost, as evals result records.
* ``tune``     - thresholds and selection margins chosen on val.
* ``config``   - the YAML config (every key documented in ``configs/agent_*.yaml``).
* ``errors``   - ``AgentInputError``: bad input, naming the file and line.
"""
