"""A big workbook as Excel writes it (shared strings, typed numbers), and the reader's peak memory.

    python -m bench.xlsx_memory --rows 1000000 --out /tmp/devices-1m.xlsx

writes the workbook (unique deviceKeys and names, so the shared-string table is as large as it
gets), then reads it through the xlsx source in a child process and prints rows, seconds and the
child's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
HEADER = ["productKey", "deviceKey", "deviceName", "timezone", "attr.rated", "tag.site"]
PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
        'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
        'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="'
        'application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.'
        'openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/'
        'worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="'
        'application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
        'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://'
        'schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{NS}" xmlns:r="http://schemas.'
        'openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="devices" '
        'sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
        'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://'
        'schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/></Relationships>'
    ),
}


def write(path: Path, rows: int) -> None:
    strings: list[str] = []
    flushed = [0]  # strings already moved to strings_out

    def shared(text: str) -> str:
        strings.append(text)
        return f'<c t="s"><v>{flushed[0] + len(strings) - 1}</v></c>'

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, body in PARTS.items():
            archive.writestr(name, body)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{NS}">'
                        f'<dimension ref="A1:F{rows + 1}"/><sheetData>'.encode())  # fmt: skip
            sheet.write(b'<row r="1">' + "".join(shared(h) for h in HEADER).encode() + b"</row>")
            for n in range(1, rows + 1):
                cells = (
                    shared(("pk-meter", "pk-inverter", "pk-turbine")[n % 3])
                    + shared(f"big-{n:08d}")
                    + shared(f"Device number {n} of the big workbook")
                    + shared("+08:00")
                    + f"<c><v>{n % 500}.5</v></c>"
                    + shared(f"site-{n % 97}")
                )
                sheet.write(f'<row r="{n + 1}">{cells}</row>'.encode())
                if len(strings) > 600_000:  # keep the generator itself small
                    strings_out.extend(strings)
                    flushed[0] += len(strings)
                    strings.clear()
            sheet.write(b"</sheetData></worksheet>")
        strings_out.extend(strings)
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as table:
            table.write(f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{NS}" '
                        f'count="{len(strings_out)}">'.encode())  # fmt: skip
            for text in strings_out:
                table.write(f"<si><t>{escape(text)}</t></si>".encode())
            table.write(b"</sst>")


strings_out: list[str] = []


def read(path: Path) -> None:
    from worker.readers.sources import open_source

    started = time.monotonic()
    source = open_source(path)
    count = sum(1 for row in source.rows() if row.option is not None)
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{path.name}: {count} rows read in {seconds:.1f} s, error={source.error}, "
          f"peak RSS {peak_mb:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/devices-big.xlsx"))
    parser.add_argument("--read-only", action="store_true", help="(internal) read, do not write")
    args = parser.parse_args()
    if args.read_only:
        read(args.out)
        return
    write(args.out, args.rows)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.0f} MB)", flush=True)
    # The generator keeps every string; the reader runs alone so that its peak is its own.
    subprocess.run([sys.executable, "-m", "bench.xlsx_memory", "--out", str(args.out),
                    "--read-only"], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
