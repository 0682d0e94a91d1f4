"""The llm layer: the ONE llama.cpp model, in tokens, KV and decoding; it never knows a role.

What the layers above use is named here, so they need not know which module holds it.
"""

from app.llm.completion import Completion, TokenLogprob, Usage
from app.llm.engine import Engine
from app.llm.loading import read_model_name
from app.llm.prompt import Prompt
from app.llm.sampling import Sampling

__all__ = ["Completion", "Engine", "Prompt", "Sampling", "TokenLogprob", "Usage", "read_model_name"]
