"""Test settings: a private LABKIT_HOME so tests never read or write a user's cache, and no hub."""
import os
import tempfile

os.environ.setdefault("LABKIT_PRESET", "smoke")
if not os.environ.get("LABKIT_TEST_KEEP_HOME"):
    os.environ["LABKIT_HOME"] = tempfile.mkdtemp(prefix="labkit-test-home-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
