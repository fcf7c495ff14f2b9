#!/usr/bin/python3
"""Writes the committed image seeds in fuzz/corpus/image/: formats stb_image_write cannot produce
(progressive and CMYK JPEG, 16-bit, palette and interlaced PNG). Needs Pillow; the fuzz run
itself does not (these files are committed, each well under 2 KB).
Usage: /usr/bin/python3 fuzz/make_extra_seeds.py"""
import os

from PIL import Image

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "image")
os.makedirs(out, exist_ok=True)


def pattern(mode, width, height):
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 40 + (100 if x > width // 2 else 0)) % 256, (y * 25) % 256, (x * y * 9) % 256)
                   for y in range(height) for x in range(width)])
    return image.convert(mode)


rgb = pattern("RGB", 17, 13)
rgb.save(os.path.join(out, "progressive.jpg"), quality=80, progressive=True)
pattern("L", 17, 13).save(os.path.join(out, "progressive_gray.jpg"), quality=80, progressive=True)
pattern("CMYK", 9, 7).save(os.path.join(out, "cmyk.jpg"), quality=80)
rgb.save(os.path.join(out, "subsampled_restart.jpg"), quality=60, subsampling=2, restart_marker_blocks=1)
rgb.convert("P", palette=Image.ADAPTIVE, colors=7).save(os.path.join(out, "palette.png"), transparency=2)
rgb.save(os.path.join(out, "interlaced.png"), interlace=1)
wide = Image.new("I;16", (6, 5))
wide.putdata([(x * 9000 + y * 3000) % 65536 for y in range(5) for x in range(6)])
wide.save(os.path.join(out, "gray16.png"))
pattern("1", 11, 5).save(os.path.join(out, "bilevel.png"))
pattern("RGB", 7, 5).save(os.path.join(out, "pil_rgb.bmp"))
