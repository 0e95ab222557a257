"""Image rows from parquet files, as Hugging Face datasets and Pick-a-Pic export them.

An image cell is an `{"bytes", "path"}` struct (the datasets `Image` feature: the encoded file's bytes, or a path when
they are null), the encoded bytes alone (a binary column), or a path string; paths are relative to the parquet
file's folder (or absolute). Reading checks every row (nulls, that a path exists) and keeps the bytes, so the split
is held in memory encoded; an image is decoded when its example is read. Rows are named `<file>:row <i>`, i from 0
as pyarrow and pandas count them; every problem is a `DataError` naming one.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping

from PIL import Image

from datamodules.image_jsonl import load_image
from datamodules.jsonl import DataError


def read_parquet(path: str, fields: Mapping[str, str], image_fields: tuple[str, ...]) -> list[dict]:
    """Rows `{ours: value}` of the columns `fields` (our name -> the file's column); `image_fields` (our names) hold
    images: each becomes encoded bytes or an absolute path. Each row's "source" is `<path>:row <i>`."""
    import pyarrow.parquet as pq  # only parquet data needs it

    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow reports a file that is not parquet through several exception types
        raise DataError(f"{path}: cannot read parquet ({type(err).__name__}: {err})") from None
    missing = [theirs for theirs in fields.values() if theirs not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (has {table.column_names})")
    if table.num_rows == 0:
        raise DataError(f"{path}: no records")
    columns = {ours: table.column(theirs).to_pylist() for ours, theirs in fields.items()}
    folder = os.path.dirname(os.path.abspath(path))
    rows = []
    for index in range(table.num_rows):
        where = f"{path}:row {index}"
        row = {"source": where}
        for ours, theirs in fields.items():
            value = columns[ours][index]
            if ours in image_fields:
                row[ours] = image_cell(value, theirs, folder, where)
            else:
                row[ours] = text_cell(value, theirs, where)
        rows.append(row)
    return rows


def text_cell(value, column: str, where: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be a string, got {type(value).__name__}")
    return value


def image_cell(value, column: str, folder: str, where: str) -> bytes | str:
    """Encoded bytes, or the absolute path of an existing file."""
    if isinstance(value, dict):  # the datasets Image struct: bytes, else the path
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if value is None:
        raise DataError(f"{where}: image {column!r} is missing (null)")
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise DataError(f"{where}: image {column!r} is empty (0 bytes)")
        return bytes(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: image {column!r} must be bytes, a path or a {{bytes, path}} struct, got "
                        f"{type(value).__name__}")
    image = os.path.join(folder, value)  # an absolute path stays as it is
    if not os.path.isfile(image):
        raise DataError(f"{where}: image {value!r} does not exist (looked for {image})")
    return image


def decode_image(image: bytes | str, where: str) -> Image.Image:
    """An RGB image from encoded bytes or a path; an undecodable one is an error naming `where`."""
    if isinstance(image, str):
        return load_image(image, where)
    try:
        with Image.open(io.BytesIO(image)) as decoded:
            return decoded.convert("RGB")
    except Exception as err:  # PIL reports undecodable data through several exception types
        raise DataError(f"{where}: cannot decode image bytes ({type(err).__name__}: {err})") from None


def digest(image: bytes | str) -> bytes:
    """SHA-256 of an image's encoded bytes (read from its file for a path)."""
    if isinstance(image, str):
        with open(image, "rb") as handle:
            image = handle.read()
    return hashlib.sha256(image).digest()
