"""Fine-tuning and alignment on the same model and plugins as pretraining.

    sft      supervised fine-tuning, loss on the assistant's answers only (optional packing)
    reward   a reward model: LM backbone + scalar head, Bradley-Terry, held-out accuracy
    dpo      direct preference optimisation, reference log-probs computed once
    ppo      PPO with a value head, a frozen reference, a reward model or reward plugin

Each method is a workflow (its batches and loss module) on the one training engine
(:mod:`llmcore.train.engine`), so it honours ``grad_accum``, ``dtype``, ``compile`` and
torchrun, and checkpoints and resumes as pretraining does. Each
``run_<method>(cfg, out_dir=..., resume=...)`` takes the resolved config of
:func:`finetune_config` (the base run's model and tokenizer plus the file's ``train``,
``generate`` and ``finetune`` sections) and returns ``(run_dir, last_metrics)``. The chat
format (:class:`Chat`) comes from ``tokenizer.chat_template`` and is saved with every
checkpoint. Adapter runs (``finetune.adapter``, e.g. LoRA) load with :func:`load_finetuned`
and fold into plain weights with :func:`merge_lora`.
"""

from llmcore.finetune.chat import Chat, chat_template_of
from llmcore.finetune.dpo import run_dpo
from llmcore.finetune.merge import merge_lora
from llmcore.finetune.models import load_finetuned, load_reward_model
from llmcore.finetune.ppo import run_ppo
from llmcore.finetune.reward import run_reward
from llmcore.finetune.session import finetune_config
from llmcore.finetune.sft import run_sft

__all__ = [
    "Chat",
    "chat_template_of",
    "finetune_config",
    "load_finetuned",
    "load_reward_model",
    "merge_lora",
    "run_dpo",
    "run_ppo",
    "run_reward",
    "run_sft",
]
