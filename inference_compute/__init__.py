"""Inference-time compute: wider beams, samples, noisy-channel reranking and MBR, with their cost.

One module per concern, each usable on its own (the agents stage calls them directly):

* ``candidates``  candidate pools at a budget (beam n-best, samples, unions, de-duplicated)
* ``nbest``       n-best files: N lines per source + a JSONL sidecar of scores + a meta sidecar
* ``features``    scoring candidates (forward, reverse / noisy channel, target LM, right-to-left, length)
* ``rerank``      selecting one candidate with a linear model over those features
* ``tune``        the feature weights, tuned on val for corpus BLEU (seeded), frozen to JSON
* ``mbr``         minimum Bayes risk: expected utility (chrF++ / BLEU) and selection, kept apart
* ``compute``     exact decoder-call / FLOP accounting and wall time, for result records
* ``lm``          a target-side language model as a translator with a placeholder source
* ``sweep``       the quality-for-compute grid, its result records and plot

Submodules are imported by their users (``from inference_compute.mbr import mbr_select``) so that
``import inference_compute`` stays cheap.
"""
