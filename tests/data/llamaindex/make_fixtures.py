"""Write the LlamaIndex storage folders the tests read, with LlamaIndex itself.

The tests do not need LlamaIndex: they read the folders this script wrote. Run it again (from
the repository root) only to refresh them:

    python -m venv /tmp/li && /tmp/li/bin/pip install llama-index-core \
        llama-index-vector-stores-faiss faiss-cpu
    /tmp/li/bin/python tests/data/llamaindex/make_fixtures.py

Folders (each ``index.storage_context.persist(folder)`` of a ``VectorStoreIndex`` over a
``FaissVectorStore``; the FAISS index is ``default__vector_store.json``, a binary FAISS file
despite its name):

* ``faiss/``: three documents split into eight nodes (the long one in six chunks, linked as
  previous / next), L2, metadata with unicode and nesting; ``faiss.expected.json`` holds the
  payload LlamaIndex's own ``node_to_metadata_dict`` makes of each node (what its vector stores
  write), by node id;
* ``faiss_ip/``: two documents, an inner-product index, ids given to the documents;
* ``simple/``: the default ``SimpleVectorStore`` (JSON, not FAISS), which is refused by name.
"""

import json
import pathlib
import shutil

import faiss
from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from llama_index.vector_stores.faiss import FaissVectorStore

HERE = pathlib.Path(__file__).resolve().parent


class Hashing(MockEmbedding):
    """A different, fixed vector for each text (MockEmbedding gives every text the same)."""

    def _get_vector(self) -> list[float]:  # not used: the methods below replace it
        raise NotImplementedError

    def _get_text_embedding(self, text: str) -> list[float]:
        import hashlib

        import numpy as np

        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.embed_dim).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [self._get_text_embedding(t) for t in texts]


def fresh(name: str) -> str:
    out = HERE / name
    shutil.rmtree(out, ignore_errors=True)
    return str(out)


def main() -> None:
    Settings.embed_model = Hashing(embed_dim=8)
    Settings.node_parser = SentenceSplitter(chunk_size=40, chunk_overlap=0)
    long_text = " ".join(f"Sentence number {i} of the long document." for i in range(12))
    docs = [
        Document(text="Ein kurzes Dokument über Vektoren ✓", metadata={"lang": "de", "n": 1}),
        Document(text=long_text, metadata={"lang": "en", "tags": ["a", "b"], "n": 2}),
        Document(text="A third, short one.", metadata={"lang": "en", "nested": {"k": None}}),
    ]
    store = FaissVectorStore(faiss_index=faiss.IndexFlatL2(8))
    index = VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store))
    index.storage_context.persist(persist_dir=fresh("faiss"))
    expected = {node_id: node_to_metadata_dict(node, remove_text=False)
                for node_id, node in index.docstore.docs.items()}
    (HERE / "faiss.expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))

    ip = FaissVectorStore(faiss_index=faiss.IndexFlatIP(8))
    named = [Document(text="first", doc_id="doc-1", metadata={"k": 1}),
             Document(text="second", doc_id="doc-2", metadata={"k": 2})]
    VectorStoreIndex.from_documents(named, storage_context=StorageContext.from_defaults(
        vector_store=ip)).storage_context.persist(persist_dir=fresh("faiss_ip"))

    VectorStoreIndex.from_documents(docs[:1]).storage_context.persist(persist_dir=fresh("simple"))


if __name__ == "__main__":
    main()
