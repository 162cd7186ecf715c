"""Write the LangChain FAISS stores the tests read, with LangChain itself.

The tests do not need LangChain: they read the files this script wrote, so what they check is
what LangChain really saves. Run it again (from the repository root) only to refresh them:

    python -m venv /tmp/lc && /tmp/lc/bin/pip install langchain-community faiss-cpu
    /tmp/lc/bin/python tests/data/langchain/make_fixtures.py

and for ``legacy/`` (pydantic 1 documents, ``langchain`` before ``langchain-community``):

    python -m venv /tmp/lcold && /tmp/lcold/bin/pip install 'langchain==0.0.330' 'pydantic<2' \
        'numpy<2' faiss-cpu
    /tmp/lcold/bin/python tests/data/langchain/make_fixtures.py legacy

Stores (each a ``save_local`` folder):

* ``current/``: five documents, L2, LangChain's own uuid4 ids, metadata with unicode, nesting,
  null, a datetime, a Decimal, a set, a numpy float and an integer past 2^53; a sixth
  document, second in the index, was deleted (LangChain renumbers the FAISS ids after it).
* ``custom_ids/``: ``index_name="docs"``, ids given by the caller (``"a-1"`` ...),
  ``MAX_INNER_PRODUCT`` (an inner-product index).
* ``broken/``: ``current`` with four faults made by hand in the saved objects: a FAISS id with
  no ``index_to_docstore_id`` entry, a docstore id with no document, a document whose metadata
  holds NaN, and a document no FAISS id names.
* ``foreign_class/``: one document whose metadata holds a ``pathlib.PurePosixPath``.
* ``legacy/``: three documents saved by ``langchain`` 0.0.330 (pydantic 1).
"""

import datetime
import decimal
import pathlib
import pickle
import shutil
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def fresh(name: str) -> str:
    out = HERE / name
    shutil.rmtree(out, ignore_errors=True)
    return str(out)


def legacy() -> None:
    from langchain.embeddings import FakeEmbeddings
    from langchain.schema import Document
    from langchain.vectorstores import FAISS

    docs = [Document(page_content=f"old text {i}", metadata={"source": f"s{i}.txt", "page": i})
            for i in range(3)]
    FAISS.from_documents(docs, FakeEmbeddings(size=8)).save_local(fresh("legacy"))


def current() -> None:
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding

    emb = DeterministicFakeEmbedding(size=8)
    docs = [Document(page_content=f"text {i} ünï ✓", metadata={
        "source": f"s{i}.txt", "page": i, "nested": {"a": [1, None, {"b": "c"}]}, "none": None,
        "big": 2**60 + i, "when": datetime.datetime(2024, 5, 1, 12, 30, i),
        "price": decimal.Decimal("12.50"), "tags": {"x", "y"}, "score": np.float32(0.25),
    }) for i in range(5)]
    store = FAISS.from_documents([docs[0], Document(page_content="deleted"), *docs[1:]], emb)
    store.delete([store.index_to_docstore_id[1]])
    store.save_local(fresh("current"))

    custom = FAISS.from_documents(docs[:3], emb, ids=["a-1", "b-2", "c-3"],
                                  distance_strategy="MAX_INNER_PRODUCT")
    custom.save_local(fresh("custom_ids"), index_name="docs")

    broken = FAISS.from_documents(docs, emb)
    ids = broken.index_to_docstore_id
    del ids[1]                                                  # FAISS id 1: no entry
    del broken.docstore._dict[ids[2]]                           # FAISS id 2: no document
    broken.docstore._dict[ids[3]].metadata["score"] = float("nan")  # FAISS id 3: NaN
    broken.docstore._dict["orphan"] = Document(page_content="no vector", metadata={"k": 1})
    broken.save_local(fresh("broken"))

    odd = FAISS.from_documents([Document(page_content="path", metadata={
        "path": pathlib.PurePosixPath("/data/a.txt")})], emb)
    odd.save_local(fresh("foreign_class"))
    with open(HERE / "foreign_class" / "index.pkl", "rb") as fh:
        assert b"PurePosixPath" in fh.read()
    pickle.loads((HERE / "current" / "index.pkl").read_bytes())  # loads in LangChain itself


if __name__ == "__main__":
    legacy() if sys.argv[1:] == ["legacy"] else current()
