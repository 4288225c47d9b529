"""A deep LSTM encoder-decoder translator (Sutskever, Vinyals & Le 2014; Luong et al. 2015 attention).

Two ways in, one set of weights:

* ``encode`` / ``decode_step`` / ``decode_sequence`` / ``loss`` work on separate source and target
  tensors. Training and decade's own batched search (``search.py``) use these: no Python loop over
  time in training, one LSTM call per decoding step.
* ``forward`` reads the causal sequence ``[source..., <2xx>, target..., </s>]`` so that
  transformers' ``generate()`` and trl's trainers can drive the model like any causal LM.

Shapes: B batch, S source length, T target length, L whole sequence length, E embed size,
H decoder hidden size, C encoder output size (2 x encoder hidden when bidirectional), V vocab;
in search, M sentences and R = M x G decoder rows (G beams per sentence).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_lstm import LSTMTranslatorConfig


class _FusedOutputCrossEntropy(torch.autograd.Function):
    """Output layer + label-smoothed cross-entropy, summed, computed ``chunk`` rows at a time.

    Forward computes the loss and, while each chunk's logits are still in cache, the gradients
    with respect to the features and the output weights; backward only scales them. The full
    (N, V) logits are never kept for backward (at N = 2,000 target tokens and V = 8k that is 64 MB,
    read and written by softmax, gather and their backward passes). Used in training only, where
    backward always follows; ``benchmarks/train_levers.py`` measures it against the plain path.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, smoothing: float,
                chunk: int) -> torch.Tensor:
        # x (N, E) features of real target positions; weight (V, E); target (N,)
        # fp32 throughout, even under bf16 autocast (x then comes in bf16): bf16 products put the loss 1e-4
        # and the output weights' gradient 0.2-0.9% off (tests/test_core_precision.py); the LSTMs and the
        # attention keep bf16's speed.
        with torch.autocast(x.device.type, enabled=False):  # autocast would cast these products back to bf16
            return _fused_output_ce_fp32(ctx, x, weight, target, smoothing, chunk)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss.to(grad_x.dtype), grad_w * grad_loss.to(grad_w.dtype), None, None, None


def _fused_output_ce_fp32(ctx, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, smoothing: float,
                          chunk: int) -> torch.Tensor:
    """The forward of ``_FusedOutputCrossEntropy`` in fp32; saves the gradients for its backward."""
    n_rows, vocab = x.size(0), weight.size(0)
    x32, w = x.float(), weight.float()
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x32)
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    for i in range(0, n_rows, chunk):
        xc, tc = x32[i:i + chunk], target[i:i + chunk]
        logits = xc @ w.t()  # (n, V)
        lse = torch.logsumexp(logits, dim=-1)  # (n,)
        gold = logits.gather(1, tc.unsqueeze(1)).squeeze(1) - lse  # log p(gold)
        loss = loss - ((1.0 - smoothing) * gold + smoothing * (logits.mean(-1) - lse)).sum()
        # d loss / d logits = softmax - q, with q = (1 - s) one-hot + s / V (label smoothing)
        g = logits.sub_(lse.unsqueeze(1)).exp_()
        if smoothing:
            g.sub_(smoothing / vocab)
        g[torch.arange(g.size(0), device=g.device), tc] -= 1.0 - smoothing
        grad_x[i:i + chunk] = g @ w  # (n, E)
        grad_w += g.t() @ xc  # (V, E)
    ctx.save_for_backward(grad_x.to(x.dtype), grad_w.to(weight.dtype))
    return loss


LOSS_CHUNK_ROWS = 512  # rows per chunk of the fused output layer: (512, 8k) fp32 logits are 16 MB


@dataclass
class EncoderState:
    """What the decoder needs from the source, batch-first so rows can be reordered on dim 0.

    The source part (memory, keys, mask) has one row per sentence, M rows; the decoder part (h, c)
    has R = M x G rows, rows m*G .. m*G+G-1 reading sentence m (G beams; G = 1 outside beam search).
    Beam search reorders decoder rows every step but sentences only when one finishes: copying the
    source part every step was 14% of beam-5 decoding time (torch.profiler, Multi30K test_2016).
    """

    memory: torch.Tensor  # (M, S, C) encoder outputs
    keys: torch.Tensor  # (M, S, H) memory projected for attention, computed once per sentence
    mask: torch.Tensor  # (M, S) True on real source tokens
    h: torch.Tensor  # (R, layers, H) decoder hidden state
    c: torch.Tensor  # (R, layers, H) decoder cell state

    def select(self, index: torch.Tensor) -> "EncoderState":
        """Rows ``index`` of every tensor (one decoder row per sentence: reordering and expansion)."""
        return self.select_rows(index, index)

    def select_rows(self, rows: torch.Tensor, sentences: torch.Tensor | None = None) -> "EncoderState":
        """Decoder rows ``rows`` (R',); source rows ``sentences`` (M',) if given, else all kept.
        ``rows`` must keep each sentence's rows together and in sentence order (G per sentence)."""
        source = (self.memory, self.keys, self.mask)
        if sentences is not None:
            source = tuple(t.index_select(0, sentences) for t in source)
        return replace(self, memory=source[0], keys=source[1], mask=source[2],
                       h=self.h.index_select(0, rows), c=self.c.index_select(0, rows))

    def astuple(self) -> tuple[torch.Tensor, ...]:
        return (self.memory, self.keys, self.mask, self.h, self.c)


class LSTMCache:
    """generate()'s cache: the encoder state plus the decoder's recurrent state."""

    def __init__(self, state: EncoderState):
        self.state = state

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.state = self.state.select(beam_idx.to(self.state.h.device))

    def get_seq_length(self, layer_idx: int = 0) -> int:  # generate() asks for it in some paths
        return 0


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[i]`` entries, leaving its padding in place. (B, S) or (B, S, D)."""
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, S)
    flipped = (lengths.unsqueeze(1) - 1 - positions).clamp(min=0)  # (B, S)
    index = torch.where(positions < lengths.unsqueeze(1), flipped, positions)
    return x.gather(1, index if x.dim() == 2 else index.unsqueeze(-1).expand_as(x))


class LSTMTranslatorModel(PreTrainedModel):
    """The network without the output layer: returns features (B, L, E) that the tied LM head reads."""

    config_class = LSTMTranslatorConfig
    base_model_prefix = "model"

    def __init__(self, config: LSTMTranslatorConfig):
        super().__init__(config)
        c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.embed_size, padding_idx=c.pad_token_id)
        self.encoder = nn.LSTM(
            c.embed_size, c.encoder_hidden_size, num_layers=c.encoder_layers, batch_first=True,
            bidirectional=c.bidirectional_encoder, dropout=c.dropout if c.encoder_layers > 1 else 0.0,
        )
        memory_size = c.encoder_hidden_size * (2 if c.bidirectional_encoder else 1)
        # Bridge: the decoder starts from a projection of the encoder's final states (h and c).
        self.bridge = nn.Linear(memory_size, 2 * c.decoder_layers * c.decoder_hidden_size)
        self.decoder = nn.LSTM(
            c.embed_size, c.decoder_hidden_size, num_layers=c.decoder_layers, batch_first=True,
            dropout=c.dropout if c.decoder_layers > 1 else 0.0,
        )
        if c.attention:
            self.attention_keys = nn.Linear(memory_size, c.decoder_hidden_size, bias=False)
            self.combine = nn.Linear(memory_size + c.decoder_hidden_size, c.embed_size)
        else:
            self.combine = nn.Linear(c.decoder_hidden_size, c.embed_size)
        self.dropout = nn.Dropout(c.dropout)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=module.embedding_dim**-0.5)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            for name, p in module.named_parameters():
                if "weight" in name:
                    nn.init.uniform_(p, -0.1, 0.1)
                else:
                    nn.init.zeros_(p)
                    # Forget-gate bias 0.5 (a positive bias, after Jozefowicz et al. 2015): gates are ordered i, f, g, o.
                    n = p.numel() // 4
                    with torch.no_grad():
                        p[n : 2 * n].fill_(0.5)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    # ---- the encoder-decoder API -------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderState:
        """Right-padded source ids (B, S) and their lengths (B,) -> EncoderState."""
        c = self.config
        if c.reverse_source:
            src = reverse_padded(src, src_lengths)
        emb = self.dropout(self.embed_tokens(src))  # (B, S, E)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.unsqueeze(1)  # (B, S)
        memory, final = self._run_encoder(emb, src_lengths)  # (B, S, C), (B, C)
        memory = memory * mask.unsqueeze(-1)  # zeros past each row's end (attention masks them too)
        init = torch.tanh(self.bridge(final)).view(src.size(0), 2, c.decoder_layers, c.decoder_hidden_size)
        keys = self.attention_keys(memory) if c.attention else memory[..., :0]
        return EncoderState(memory, keys, mask, init[:, 0].contiguous(), init[:, 1].contiguous())

    def _run_encoder(self, emb: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded embeddings (B, S, E) -> outputs (B, S, C) and the top layer's final states (B, C).

        Why not ``self.encoder(pack_padded_sequence(...))``: a PackedSequence takes torch's native
        step-by-step LSTM, while a plain tensor takes oneDNN's fused one: forward+backward of this
        function is 1.9-2.2x faster at JoeyNMT's sizes (``python benchmarks/encoder_paths.py``).
        Right padding cannot reach a forward direction's real positions; a backward direction instead
        reads each row reversed within its length. The weights are ``self.encoder``'s own, one layer and
        direction at a time, so checkpoints are unchanged.
        """
        c, lstm = self.config, self.encoder
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1)  # (B, 1, 1) each row's last real position
        x, finals = emb, []
        for layer in range(c.encoder_layers):
            outs, finals = [], []
            for suffix in ("", "_reverse") if c.bidirectional_encoder else ("",):
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inp = reverse_padded(x, lengths) if suffix else x
                zeros = inp.new_zeros(1, inp.size(0), c.encoder_hidden_size)
                out = torch.lstm(inp, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)[0]  # (B, S, He)
                finals.append(out.gather(1, last.expand(-1, 1, out.size(-1))).squeeze(1))  # (B, He)
                outs.append(reverse_padded(out, lengths) if suffix else out)
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]  # (B, S, C)
            if layer < c.encoder_layers - 1:
                x = F.dropout(x, lstm.dropout, self.training)  # nn.LSTM's dropout between layers
        return x, torch.cat(finals, dim=-1)

    def decode_sequence(self, tgt_in: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """Teacher-forced decoder over whole sequences: (B, T) ids -> features (B, T, E), state after T.

        One LSTM call over all T steps and one batched attention product for all T positions.
        """
        emb = self.dropout(self.embed_tokens(tgt_in))  # (B, T, E)
        hx = (state.h.transpose(0, 1).contiguous(), state.c.transpose(0, 1).contiguous())  # (layers, B, H)
        out, (h, c) = self.decoder(emb, hx)  # out (B, T, H)
        features = self._attend(out, state)
        new_state = EncoderState(state.memory, state.keys, state.mask, h.transpose(0, 1), c.transpose(0, 1))
        return features, new_state

    def _attend(self, out: torch.Tensor, state: EncoderState) -> torch.Tensor:
        """Decoder outputs (R, T, H) -> attentional features (R, T, E)."""
        if self.config.attention:
            R, T, H = out.shape
            M = state.memory.size(0)
            queries = out.reshape(M, (R // M) * T, H)  # the G rows of a sentence share its memory
            scores = torch.bmm(queries, state.keys.transpose(1, 2))  # (M, G*T, S)
            scores = scores.masked_fill(~state.mask.unsqueeze(1), float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            context = torch.bmm(weights, state.memory).view(R, T, -1)  # (R, T, C)
            out = torch.cat([context, out], dim=-1)
        return self.dropout(torch.tanh(self.combine(out)))

    # ---- the causal-LM view ------------------------------------------------------------------

    def split_sequence(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Locate source and target parts of ``[pad.. source <2xx> target.. pad..]`` rows.

        Returns (src (B, S) right-padded, src_lengths (B,), tgt (B, T) right-padded,
        tgt_lengths (B,), tgt_index (B, T) positions of target tokens in the row).
        """
        lang_ids = torch.tensor(self.config.lang_token_ids or [], device=input_ids.device)
        is_tag = torch.isin(input_ids, lang_ids) & attention_mask.bool()
        if not bool(is_tag.any(dim=1).all()):
            raise ValueError("every row needs a language tag (<2xx>) between source and target")
        L = input_ids.size(1)
        positions = torch.arange(L, device=input_ids.device).unsqueeze(0).expand_as(input_ids)
        tag_pos = torch.where(is_tag, positions, L).min(dim=1).values  # (B,)
        real = attention_mask.bool()
        first = torch.where(real, positions, L).min(dim=1).values  # first real token (left padding)
        last = torch.where(real, positions, -1).max(dim=1).values  # last real token (right padding)
        src_lengths = tag_pos - first
        tgt_lengths = last - tag_pos + 1
        S, T = max(int(src_lengths.max()), 1), int(tgt_lengths.max())
        src_index = (first.unsqueeze(1) + torch.arange(S, device=input_ids.device)).clamp(max=L - 1)
        tgt_index = (tag_pos.unsqueeze(1) + torch.arange(T, device=input_ids.device)).clamp(max=L - 1)
        pad = self.config.pad_token_id
        src = input_ids.gather(1, src_index).masked_fill(
            torch.arange(S, device=input_ids.device) >= src_lengths.unsqueeze(1), pad)
        tgt = input_ids.gather(1, tgt_index).masked_fill(
            torch.arange(T, device=input_ids.device) >= tgt_lengths.unsqueeze(1), pad)
        return src, src_lengths, tgt, tgt_lengths, tgt_index

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: LSTMCache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Features (B, L, E) aligned with ``input_ids``; zeros on source and padding positions."""
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if isinstance(past_key_values, LSTMCache):
            # Incremental step: input_ids holds only the newest token of each row.
            features, state = self.decode_sequence(input_ids[:, -1:], past_key_values.state)
            past_key_values.state = state
            return BaseModelOutputWithPast(last_hidden_state=features, past_key_values=past_key_values)
        src, src_lengths, tgt, tgt_lengths, tgt_index = self.split_sequence(input_ids, attention_mask)
        state = self.encode(src, src_lengths)
        # Pack the decoder so the returned state is each row's state after its own last token.
        emb = self.dropout(self.embed_tokens(tgt))
        hx = (state.h.transpose(0, 1).contiguous(), state.c.transpose(0, 1).contiguous())
        packed = pack_padded_sequence(emb, tgt_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.decoder(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tgt.size(1))  # (B, T, H)
        features = self._attend(out, state)  # (B, T, E)
        full = features.new_zeros(input_ids.size(0), input_ids.size(1), features.size(-1))
        valid = (torch.arange(tgt.size(1), device=tgt.device) < tgt_lengths.unsqueeze(1)).unsqueeze(-1)
        full.scatter_add_(1, tgt_index.unsqueeze(-1).expand_as(features), features * valid)
        cache = None
        if use_cache:
            cache = LSTMCache(EncoderState(state.memory, state.keys, state.mask, h.transpose(0, 1), c.transpose(0, 1)))
        return BaseModelOutputWithPast(last_hidden_state=full, past_key_values=cache)


class LSTMTranslatorForCausalLM(PreTrainedModel, GenerationMixin):
    """LSTM translator with a (tied) output layer: what ``generate()``, trl and decade's search use."""

    config_class = LSTMTranslatorConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    main_input_name = "input_ids"

    def __init__(self, config: LSTMTranslatorConfig):
        super().__init__(config)
        self.model = LSTMTranslatorModel(config)
        self.lm_head = nn.Linear(config.embed_size, config.vocab_size, bias=False)
        self.post_init()

    # generate() would otherwise build a DynamicCache, which needs attention layers we lack.
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    # ---- the encoder-decoder API (used by training and decade's search) -----------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderState:
        return self.model.encode(src, src_lengths)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer, in fp32 even under bf16 autocast: bf16 logits are rounded to 1/16-1/8 at the
        sizes they reach, which coarsens every search and scoring log-prob (per-token log-probs of a
        Multi30K model moved 0.0085 on average in bf16 with bf16 logits, 0.0033 with fp32 ones)."""
        with torch.autocast(features.device.type, enabled=False):
            return self.lm_head(features.float())

    def decode_step(self, tokens: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """One step for a batch of rows: previous tokens (B,) -> log-probs (B, V), next state."""
        features, state = self.model.decode_sequence(tokens.unsqueeze(1), state)
        return torch.log_softmax(self.logits(features[:, 0]), dim=-1), state

    def token_logprobs(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                       tgt_out: torch.Tensor) -> torch.Tensor:
        """Log p of each gold token (B, T); 0 where ``tgt_out`` is padding."""
        features, _ = self.model.decode_sequence(tgt_in, self.encode(src, src_lengths))
        logp = torch.log_softmax(self.logits(features), dim=-1)  # (B, T, V)
        gold = logp.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
        return gold.masked_fill(tgt_out.eq(self.config.pad_token_id), 0.0)

    def loss(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed (label-smoothed) cross-entropy over target tokens, and the number of those tokens.

        Returned as a sum so that the caller can divide by the token count of the *global* batch:
        this keeps gradients identical between one process and several.
        """
        features, _ = self.model.decode_sequence(tgt_in, self.encode(src, src_lengths))  # (B, T, E)
        real = tgt_out.ne(self.config.pad_token_id)  # (B, T)
        x, gold = features[real], tgt_out[real]  # (N, E), (N,): padding never reaches the output layer
        if torch.is_grad_enabled() and x.requires_grad:
            loss = _FusedOutputCrossEntropy.apply(x, self.lm_head.weight, gold, float(label_smoothing), LOSS_CHUNK_ROWS)
        else:
            loss = F.cross_entropy(self.logits(x), gold, label_smoothing=label_smoothing, reduction="sum")
        return loss, real.sum()

    # ---- the causal-LM view (generate(), trl) -------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: LSTMCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.model(input_ids, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.logits(hidden)  # (B, L, V)
        loss = None
        if labels is not None:  # causal LM convention: position t predicts labels[t + 1]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        if not isinstance(past_key_values, LSTMCache):  # first step, or a cache that is not ours
            return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True}
        return {"input_ids": input_ids[:, -1:], "past_key_values": past_key_values, "use_cache": True}

    def _reorder_cache(self, past_key_values: LSTMCache, beam_idx: torch.Tensor) -> LSTMCache:
        past_key_values.reorder_cache(beam_idx)
        return past_key_values

    def flops_per_target_token(self, mean_src_len: float = 13.0) -> float:
        """Forward FLOPs (2 per multiply-add, matrix products only) of one decoder step: decoder LSTM,
        attention over ``mean_src_len`` source positions, combine layer, output layer.

        The encoder is not included: it runs once per source token, not per target token (and once per
        sentence, not per beam row, in search); see ``encoder_flops_per_source_token``."""
        c = self.config
        H, E, V = c.decoder_hidden_size, c.embed_size, c.vocab_size
        C = c.encoder_hidden_size * (2 if c.bidirectional_encoder else 1)
        dec = 2 * 4 * H * (E + H) + 2 * 4 * H * (2 * H) * (c.decoder_layers - 1)
        # scores: (H) . keys (H) per position; context: weights x memory (C) per position
        att = (2 * mean_src_len * (H + C) + 2 * (C + H) * E) if c.attention else 2 * H * E
        out = 2 * E * V
        return float(dec + att + out)

    def encoder_flops_per_source_token(self) -> float:
        """Forward FLOPs of the encoder for one source token: every LSTM layer in each direction, plus
        the attention-key projection, which ``encode`` computes once per source position."""
        c = self.config
        dirs = 2 if c.bidirectional_encoder else 1
        He, E = c.encoder_hidden_size, c.embed_size
        C = dirs * He
        lstm = dirs * 2 * 4 * He * (E + He) + (c.encoder_layers - 1) * dirs * 2 * 4 * He * (C + He)
        keys = 2 * C * c.decoder_hidden_size if c.attention else 0
        return float(lstm + keys)
