"""decade's synth stage: monolingual text -> synthetic parallel data -> better translators.

``prepare`` (clean, de-duplicate, decontaminate), ``backtranslate`` (greedy, beam, sampling,
top-k, noised beam; sharded and resumable), ``filter`` (length ratio, round-trip chrF++, dual
conditional cross-entropy), ``mix`` (tagged or untagged, real:synthetic ratio, a ``datasets``
Dataset) and ``loop`` (iterative back-translation / self-training in rounds). Each is a module
with a config dataclass and one entry function, and a ``python -m synth`` command.

synth builds on ``core_seq2seq`` (the ``Translator`` interface, training) and ``evals`` (chrF++,
BLEU) and imports nothing from the floors above it.
"""
