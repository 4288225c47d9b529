"""decade's bottom floor: the LSTM translator, its tokenizer, data, training and search."""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_lstm import LSTMTranslatorConfig
from .modeling_lstm import LSTMTranslatorForCausalLM

# Auto-class registration lasts only for the process: do it on import.
AutoConfig.register(LSTMTranslatorConfig.model_type, LSTMTranslatorConfig, exist_ok=True)
AutoModelForCausalLM.register(LSTMTranslatorConfig, LSTMTranslatorForCausalLM, exist_ok=True)

__all__ = ["LSTMTranslatorConfig", "LSTMTranslatorForCausalLM"]
