"""Scenarios of features/llm.feature: the model receives the context that survived."""

from pytest_bdd import scenarios

# The llm steps and the chat_server fixture (pytest-bdd registers steps as
# fixtures in the defining module, so they are imported whole).
from tests.llm.bdd_steps import *  # noqa: F403

scenarios("llm.feature")
