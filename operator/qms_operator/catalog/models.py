"""The Qwen models the operator knows, as data: each model's architecture (from which
its parameter count and KV cache per token are computed, not typed in), context, inputs,
speech, Hugging Face repo and Qwen's recommended sampling, with the source of every
number in `SOURCES`. Pure: no I/O.

Parameter counts are derived (catalog/sizing.py `text_params`) from the architecture;
tests/operator/test_catalog.py checks them against transformers' own count on the real
configs in ../shared/realqwen (Qwen3-0.6B, Qwen3-Omni-30B-A3B-Instruct) and on configs
built from these numbers, and against the rounded figures Qwen publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the numbers come from (keys used in each model's `sources`).
SOURCES = {
    "cfg-0.6b": "config.json of Qwen/Qwen3-0.6B@c1899de2 (../shared/realqwen/Qwen3-0.6B)",
    "cfg-omni": "config.json and generation_config.json of "
    "Qwen/Qwen3-Omni-30B-A3B-Instruct@26291f79 (../shared/realqwen/Qwen3-Omni-30B-A3B-Instruct)",
    "report": "Qwen3 Technical Report (arXiv 2505.09388), tables 1 and 2: layers, Q/KV "
    "heads, tied embeddings, context, experts",
    "qwen-docs": "qwen.readthedocs.io (github.com/QwenLM/Qwen3 docs/source): quickstart "
    "sampling (thinking 0.6/0.95/20/0, non-thinking 0.7/0.8/20/0), concepts (32,768 native, "
    "131,072 with YaRN factor 4)",
    "card-dense": "the Qwen3-4B..32B model cards (huggingface.co/Qwen/Qwen3-*): hidden and "
    "intermediate sizes, 'Context Length: 32,768 natively and 131,072 tokens with YaRN', "
    "max_position_embeddings 40,960 = 32,768 out + 8,192 prompt",
    "card-30b-a3b": "huggingface.co/Qwen/Qwen3-30B-A3B: 30.5B total, 3.3B activated, 128 "
    "experts, 8 activated",
    "card-2507": "huggingface.co/Qwen/Qwen3-30B-A3B-Instruct-2507 and -Thinking-2507: "
    "262,144 natively; sampling 0.7/0.8/20/0 (Instruct), 0.6/0.95/20/0 (Thinking)",
    "card-235b": "huggingface.co/Qwen/Qwen3-235B-A22B: 235B total, 22B activated, 94 layers, "
    "64/4 heads, 128 experts, 8 activated, 32,768 natively and 131,072 with YaRN",
    "card-coder": "huggingface.co/Qwen/Qwen3-Coder-30B-A3B-Instruct: 30.5B / 3.3B, 48 layers, "
    "32/4 heads, 128/8 experts, 262,144 natively; sampling 0.7/0.8/20, repetition 1.05",
    "card-omni": "huggingface.co/Qwen/Qwen3-Omni-30B-A3B-Instruct (README of QwenLM/Qwen3-Omni): "
    "Instruct speaks (thinker + talker), Thinking and Captioner are the thinker only, text "
    "out; Captioner takes audio; minimum GPU memory table",
}


@dataclass(frozen=True)
class TextArch:
    """The batched text model (Qwen3-Omni: the thinker's `text_config`), as config.json
    names it. `experts` 0 for a dense model."""

    layers: int  # num_hidden_layers
    hidden: int  # hidden_size
    intermediate: int  # intermediate_size (dense MLP; unused by a MoE with no dense layers)
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int
    vocab: int  # vocab_size
    tied: bool  # tie_word_embeddings
    max_positions: int  # max_position_embeddings: the context the runtime caps to
    experts: int = 0  # num_experts
    experts_per_token: int = 0  # num_experts_per_tok
    moe_intermediate: int = 0  # moe_intermediate_size


@dataclass(frozen=True)
class Sampling:
    """Qwen's recommended sampling for the model's default mode."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float = 0.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class QwenModel:
    name: str  # the preset name (spec.model.preset, spec.model.name)
    repo: str  # Hugging Face repo id
    published: str  # the parameter count Qwen publishes, rounded ("30.5B")
    arch: TextArch
    native_context: int  # tokens, as the model card states
    yarn_context: int | None  # with YaRN where the card allows it
    inputs: tuple[str, ...]  # besides text: "image", "audio", "video"
    speaks: bool  # audio out (Qwen3-Omni's talker and code2wav)
    sampling: Sampling | None  # None: none published (generation_config.json decides)
    sources: tuple[str, ...]
    # Qwen3-Omni: the thinker's audio and vision encoders (loaded for every request) and
    # the talker + code2wav (loaded only for speech out), counted from the real config,
    # split as int8 quantizes them (2-D weights besides embeddings / the rest).
    encoder_params: tuple[int, int] = (0, 0)
    speech_params: int = 0


_DENSE_COMMON = {"head_dim": 128, "vocab": 151_936, "max_positions": 40_960}
_MOE_30B = TextArch(
    layers=48, hidden=2048, intermediate=6144, heads=32, kv_heads=4, head_dim=128,
    vocab=151_936, tied=False, max_positions=40_960, experts=128, experts_per_token=8,
    moe_intermediate=768,
)  # fmt: skip
_OMNI_THINKER = TextArch(
    layers=48, hidden=2048, intermediate=768, heads=32, kv_heads=4, head_dim=128,
    vocab=152_064, tied=False, max_positions=65_536, experts=128, experts_per_token=8,
    moe_intermediate=768,
)  # fmt: skip
_OMNI_ENCODERS = (1_181_141_216, 5_417_360)  # audio + vision towers of the thinker
_OMNI_SPEECH = 3_324_596_480 + 216_016_577  # talker + code2wav
_HYBRID = Sampling(temperature=0.6, top_p=0.95, top_k=20)  # thinking mode, the default
_INSTRUCT = Sampling(temperature=0.7, top_p=0.8, top_k=20)


def _dense(name: str, published: str, layers: int, hidden: int, inter: int, heads: int,
           tied: bool, yarn: bool) -> QwenModel:  # fmt: skip
    arch = TextArch(layers, hidden, inter, heads, 8, tied=tied, **_DENSE_COMMON)
    return QwenModel(
        name=f"qwen3-{name}", repo=f"Qwen/Qwen3-{name.upper()}", published=published,
        arch=arch, native_context=32_768, yarn_context=131_072 if yarn else None, inputs=(),
        speaks=False, sampling=_HYBRID, sources=("report", "card-dense", "qwen-docs"),
    )  # fmt: skip


def _omni(variant: str, inputs: tuple[str, ...], speaks: bool, published: str) -> QwenModel:
    return QwenModel(
        name=f"qwen3-omni-30b-a3b-{variant.lower()}", repo=f"Qwen/Qwen3-Omni-30B-A3B-{variant}",
        published=published, arch=_OMNI_THINKER, native_context=65_536, yarn_context=None,
        inputs=inputs, speaks=speaks, sampling=None, sources=("cfg-omni", "card-omni"),
        encoder_params=_OMNI_ENCODERS, speech_params=_OMNI_SPEECH if speaks else 0,
    )  # fmt: skip


def _moe_30b(repo: str, context: int, yarn: int | None, sampling: Sampling,
             sources: tuple[str, ...]) -> QwenModel:  # fmt: skip
    """A text model of the Qwen3-30B-A3B architecture (`context`: its
    max_position_embeddings, which is also its native context or YaRN's base)."""
    return QwenModel(
        name=repo.removeprefix("Qwen/").lower(), repo=repo, published="30.5B",
        arch=TextArch(**{**vars(_MOE_30B), "max_positions": context}),
        native_context=min(context, 262_144) if yarn is None else 32_768, yarn_context=yarn,
        inputs=(), speaks=False, sampling=sampling, sources=sources,
    )  # fmt: skip


_MODELS = [
    _omni("Instruct", ("image", "audio", "video"), True, "35B"),
    _omni("Thinking", ("image", "audio", "video"), False, "32B"),
    _omni("Captioner", ("audio",), False, "32B"),
    _dense("0.6b", "0.6B", 28, 1024, 3072, 16, tied=True, yarn=False),
    _dense("1.7b", "1.7B", 28, 2048, 6144, 16, tied=True, yarn=False),
    _dense("4b", "4.0B", 36, 2560, 9728, 32, tied=True, yarn=True),
    _dense("8b", "8.2B", 36, 4096, 12288, 32, tied=False, yarn=True),
    _dense("14b", "14.8B", 40, 5120, 17408, 40, tied=False, yarn=True),
    _dense("32b", "32.8B", 64, 5120, 25600, 64, tied=False, yarn=True),
    _moe_30b(
        "Qwen/Qwen3-30B-A3B", 40_960, 131_072, _HYBRID, ("report", "card-30b-a3b", "qwen-docs")
    ),
    _moe_30b("Qwen/Qwen3-30B-A3B-Instruct-2507", 262_144, None, _INSTRUCT, ("card-2507", "report")),
    _moe_30b("Qwen/Qwen3-30B-A3B-Thinking-2507", 262_144, None, _HYBRID, ("card-2507", "report")),
    QwenModel(
        name="qwen3-235b-a22b",
        repo="Qwen/Qwen3-235B-A22B",
        published="235B",
        arch=TextArch(
            layers=94,
            hidden=4096,
            intermediate=12288,
            heads=64,
            kv_heads=4,
            head_dim=128,
            vocab=151_936,
            tied=False,
            max_positions=40_960,
            experts=128,
            experts_per_token=8,
            moe_intermediate=1536,
        ),
        native_context=32_768,
        yarn_context=131_072,
        inputs=(),
        speaks=False,
        sampling=_HYBRID,
        sources=("report", "card-235b", "qwen-docs"),
    ),
    _moe_30b(
        "Qwen/Qwen3-Coder-30B-A3B-Instruct",
        262_144,
        None,
        Sampling(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05),
        ("card-coder", "report"),
    ),
]
MODELS: dict[str, QwenModel] = {model.name: model for model in _MODELS}


def find_model(name: str) -> QwenModel | None:
    """The catalog entry for a preset or model name (case-insensitive; the repo id, with
    or without `Qwen/`, also matches)."""
    key = name.strip().lower().removeprefix("qwen/")
    return MODELS.get(key)
