"""Helper for the two-process test: train from a JSON experiment config (run directly or under torchrun)."""

import json
import sys

import torch

from core_seq2seq.training import experiment_from_dict, train

torch.set_num_threads(1)
train(experiment_from_dict(json.load(open(sys.argv[1]))), log=lambda m: None)
