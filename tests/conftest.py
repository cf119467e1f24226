"""Test settings: a private LABKIT_HOME so tests never read or write a user's cache, and no hub."""
import os
import tempfile

import pytest
import torch

os.environ.setdefault("LABKIT_PRESET", "smoke")
if not os.environ.get("LABKIT_TEST_KEEP_HOME"):
    os.environ["LABKIT_HOME"] = tempfile.mkdtemp(prefix="labkit-test-home-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_thread():
    """Models this small run fastest on one thread; two threads spin-wait badly on a busy 2-core machine.

    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tok():
    """A word-level tokenizer trained on 50 stories of the world, with every world word in it (a module
    may define its own ``tok``)."""
    from labkit import world
    from labkit.tokenizer import train_tokenizer

    return train_tokenizer((d.text for d in world.corpus("train", 50)), extra_words=world.vocabulary())
