"""``python -m packforcing.train --stage vae|vae-select|clip|latents|teacher|ode|compressor|dmd|all`` (see each module)."""

from __future__ import annotations

import sys

from packforcing.errors import main_guard


@main_guard
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv[argv.index("--stage") + 1] if "--stage" in argv else "all"
    if stage == "vae-select":
        from packforcing.train.vae import main_select

        argv.remove("--stage"), argv.remove("vae-select")
        main_select(argv)
    elif stage == "vae":
        from packforcing.train.vae import main_vae

        argv.remove("--stage"), argv.remove("vae")
        main_vae(argv)
    elif stage == "clip":
        from packforcing.train.clip import main_clip

        argv.remove("--stage"), argv.remove("clip")
        main_clip(argv)
    elif stage == "dmd":
        from packforcing.train.dmd import main as dmd_main

        argv.remove("--stage"), argv.remove("dmd")
        dmd_main(argv)
    else:
        from packforcing.train.diffusion import main as diffusion_main

        diffusion_main(argv)


if __name__ == "__main__":
    main()
