"""Stream names: validation and the injective, path-safe folder encoding (DESIGN §3)."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from transit_arrow.errors import InvalidInputError
from transit_arrow.names import decode_stream_name, encode_stream_name, validate_stream_name
from transit_arrow.storage import LocalStore

ALPHABET = string.ascii_letters + string.digits + "._-/"
COMPONENT_ALPHABET = ALPHABET.replace("/", "")
MAX_ENCODED = 200


def is_valid(name: str) -> bool:
    """The oracle: DESIGN §3 restated independently of the library."""
    return (
        1 <= len(name) <= 255
        and all(c in ALPHABET for c in name)
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


_components = st.text(COMPONENT_ALPHABET, min_size=1, max_size=60).filter(
    lambda c: c not in (".", "..")
)
valid_names = st.one_of(
    # Arbitrary strings over the alphabet, kept when valid.
    st.text(ALPHABET, min_size=1, max_size=255).filter(is_valid),
    # Slash-heavy names, which grow the most when encoded.
    st.lists(_components, min_size=1, max_size=40).map("/".join).filter(lambda n: len(n) <= 255),
)


class TestValidation:
    """`validate_stream_name` accepts exactly the names of DESIGN §3."""

    @pytest.mark.parametrize(
        "name",
        [
            "a",
            "main",
            "a/b/c",
            "x.y-z_1",
            "A-Z_0.9",
            "..a",
            "a..",
            ".hidden",
            "a/.b/c..",
            "-",
            "_",
            "a" * 255,
            "/".join(["ab"] * 85),
        ],
    )
    def test_valid(self, name: str) -> None:
        """Valid names are returned unchanged."""
        assert is_valid(name)
        assert validate_stream_name(name) == name

    @pytest.mark.parametrize(
        ("name", "why"),
        [
            ("", "empty"),
            ("a" * 256, "256 characters"),
            ("..", "'..'"),
            (".", "'..'"),
            ("a/../b", "'..'"),
            ("a/./b", "'..'"),
            ("a/..", "'..'"),
            ("/x", "start or end"),
            ("x/", "start or end"),
            ("/", "start or end"),
            ("a//b", "empty"),
            ("a b", "' '"),
            ("é", "'é'"),
            ("a@1", "'@'"),
            ("a%2Fb", "'%'"),
            ("a~b", "'~'"),
            ("a\\b", "'\\\\\\\\'"),
            ("a\n", "'\\\\n'"),
            ("a\x00", "'\\\\x00'"),
        ],
    )
    def test_invalid(self, name: str, why: str) -> None:
        """Invalid names raise `InvalidInputError` (a `ValueError`) saying why."""
        assert not is_valid(name)
        with pytest.raises(InvalidInputError, match=why):
            validate_stream_name(name)
        with pytest.raises(ValueError):
            encode_stream_name(name)

    @pytest.mark.parametrize("name", [None, 1, b"main", ["a"], Path("a")])
    def test_not_a_str(self, name: object) -> None:
        """Anything but a `str` is refused, naming its type."""
        with pytest.raises(InvalidInputError, match=type(name).__name__):
            validate_stream_name(name)

    @given(st.text(ALPHABET + " @%~é\\:", max_size=300))
    def test_matches_the_oracle(self, name: str) -> None:
        """On arbitrary strings, the library agrees with the DESIGN §3 oracle."""
        try:
            validate_stream_name(name)
        except InvalidInputError:
            assert not is_valid(name)
        else:
            assert is_valid(name)


def _assert_path_safe(enc: str) -> None:
    assert "/" not in enc
    assert enc not in ("", ".", "..")
    assert len(enc) <= MAX_ENCODED
    assert all(c in COMPONENT_ALPHABET + "%~" for c in enc), enc


class TestEncoding:
    """`encode_stream_name` maps every valid name to a distinct, safe path component."""

    @given(valid_names)
    @example("a" * 255)
    @example("/".join(["a"] * 128))
    @example("a" * 200)
    @example("a" * 201)
    @example("a/" * 49 + "a")
    @settings(max_examples=300)
    def test_path_safe(self, name: str) -> None:
        """The encoding is one path component, never '.' or '..', at most 200 characters."""
        _assert_path_safe(encode_stream_name(name))

    @given(valid_names)
    @example("a/b/c")
    @example("x.y-z_1")
    @example("/".join(["a"] * 66))
    @settings(max_examples=300)
    def test_decode_inverts(self, name: str) -> None:
        """`decode_stream_name` inverts the encoding whenever it was not shortened ('~')."""
        enc = encode_stream_name(name)
        if "~" in enc:
            assert decode_stream_name(enc) is None
        else:
            assert decode_stream_name(enc) == name

    @given(valid_names, valid_names)
    @settings(max_examples=300)
    def test_injective_on_pairs(self, a: str, b: str) -> None:
        """Two different names never encode equally."""
        if a != b:
            assert encode_stream_name(a) != encode_stream_name(b)

    @given(
        st.lists(st.sampled_from(["a", "b", "cd", "e.f", "g-h"]), min_size=70, max_size=100).map(
            "/".join
        ),
        st.text(COMPONENT_ALPHABET, min_size=1, max_size=20),
        st.text(COMPONENT_ALPHABET, min_size=1, max_size=20),
    )
    @settings(max_examples=100)
    def test_injective_on_long_names_sharing_a_prefix(
        self, prefix: str, tail_a: str, tail_b: str
    ) -> None:
        """Long names that differ only after the encoded cut-off still encode differently."""
        a, b = prefix + "/" + tail_a, prefix + "/" + tail_b
        assume(a != b and is_valid(a) and is_valid(b))
        enc_a, enc_b = encode_stream_name(a), encode_stream_name(b)
        assert enc_a[:150] == enc_b[:150]  # the part kept verbatim is the same
        assert enc_a != enc_b

    def test_injective_on_a_large_set(self) -> None:
        """Thousands of names, many near-collisions included, have pairwise distinct encodings."""
        rng = random.Random(20240501)
        names: set[str] = set()
        while len(names) < 20_000:
            k = rng.choice([1, 2, 5, 60, 255])
            name = "".join(rng.choices(ALPHABET, k=rng.randint(1, k)))
            if is_valid(name):
                names.add(name)
        # Neighbours that naive schemes confuse: '/' vs '_', '-' or '.', and long names whose
        # encodings share the first 150 characters.
        for stem in ["a", "ab", "a.b", "x" * 150]:
            for sep in "/_-.":
                names.update({f"{stem}{sep}c", f"c{sep}{stem}", f"{stem}{sep}{sep}c"})
        long_prefix = "/".join(["p"] * 100)
        names.update(f"{long_prefix}/{i}" for i in range(1000))
        names.update(f"{'q' * 200}{i}" for i in range(1000))
        names = {n for n in names if is_valid(n)}
        encoded = {encode_stream_name(n) for n in names}
        assert len(encoded) == len(names)
        for enc in encoded:
            _assert_path_safe(enc)

    def test_examples(self) -> None:
        """Short names are percent-encoded; long ones are cut and suffixed with '~' + a hash."""
        assert encode_stream_name("main") == "main"
        assert encode_stream_name("a/b/c") == "a%2Fb%2Fc"
        assert encode_stream_name("x.y-z_1") == "x.y-z_1"
        long = encode_stream_name("a" * 255)
        assert long.startswith("a" * 150 + "~")
        assert len(long) == 191
        assert decode_stream_name(long) is None

    @pytest.mark.parametrize("name", ["a/b", "a_b", "/".join(["s"] * 128), "z" * 255])
    def test_usable_as_a_folder(self, tmp_path: Path, name: str) -> None:
        """The encoding is one real folder name: it round-trips through a `LocalStore` listing."""
        store = LocalStore(tmp_path)
        enc = encode_stream_name(name)
        store.put(f"streams/{enc}/commits/0.json", b"{}")
        assert store.list("streams") == [enc + "/"]
        assert store.list(f"streams/{enc}/commits") == ["0.json"]
