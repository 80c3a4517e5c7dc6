"""``mlmm build``: build a solvated (or vacuum) system from a recipe or from options.

    mlmm build systems/t4l-toluene.yaml -o t4l
    mlmm build --ligand toluene.sdf --protein protein.pdb --padding 1.0 -o complex
    mlmm build --ligand "CC(=O)[O-]" --no-solvent -o acetate-vacuum

Options given on the command line override the recipe's values. The output folder appears
only when the build and the save both succeed.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="build a solvated protein-ligand system (OpenFF Sage + ff14SB + TIP3P)",
        description="Build a parametrized system from a YAML recipe or from --ligand/--protein options and save "
                    "it to a folder (system.xml, topology.pdb, metadata.json).",
    )
    parser.add_argument("recipe", nargs="?", help="YAML recipe (e.g. systems/toluene-water.yaml)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--ligand", action="append", metavar="SDF|MOL2|SMILES",
                        help="ligand file or SMILES (repeat for several)")
    parser.add_argument("--cofactor", action="append", metavar="SDF|MOL2|SMILES",
                        help="cofactor file or SMILES (repeat for several)")
    parser.add_argument("--protein", metavar="PDB", help="protonated protein PDB file")
    parser.add_argument("--add-hydrogens", type=float, metavar="PH", dest="add_hydrogens_ph",
                        help="protonate the protein with PDBFixer at this pH")
    parser.add_argument("--padding", type=float, metavar="NM",
                        help="closest distance between the solute and its periodic images in nm (default 1.0; "
                             "box edge = solute diameter + padding)")
    parser.add_argument("--box-size", type=float, nargs="+", metavar="NM", help="box edge(s) in nm (1 or 3 values)")
    parser.add_argument("--ionic-strength", type=float, metavar="M", help="NaCl concentration in mol/L (default 0.15)")
    parser.add_argument("--no-neutralize", dest="neutralize", action="store_const", const=False,
                        help="do not add neutralizing counter-ions")
    parser.add_argument("--no-solvent", dest="solvent", action="store_const", const=False,
                        help="no water or ions (vacuum unless --box-size is given)")
    parser.add_argument("--forcefield", dest="small_molecule_forcefield", metavar="NAME",
                        help="OpenFF small-molecule force field (default openff-2.2.1)")
    parser.add_argument("--protein-forcefield", metavar="FFXML", help="protein force field (default amber/ff14SB.xml)")
    parser.add_argument("--water", dest="water_model", choices=("tip3p", "opc", "tip4pew"),
                        help="water model (default tip3p)")
    parser.add_argument("--charge-method", choices=("nagl", "am1bcc"), help="ligand charges (default nagl)")
    parser.add_argument("--constraints", choices=("hbonds", "none", "allbonds", "hangles"),
                        help="bond constraints (default hbonds; water is always rigid)")
    parser.add_argument("--hmr", type=float, dest="hydrogen_mass", metavar="AMU",
                        help="hydrogen mass repartitioning: hydrogen mass in amu (e.g. 3.0)")
    parser.add_argument("--cutoff", type=float, dest="nonbonded_cutoff", metavar="NM",
                        help="PME real-space cutoff in nm (default 0.9)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=run)


#: command-line destinations passed to build_system when given
OPTION_DESTS = (
    "add_hydrogens_ph", "padding", "box_size", "ionic_strength", "neutralize", "solvent", "small_molecule_forcefield",
    "protein_forcefield", "water_model", "charge_method", "constraints", "hydrogen_mass", "nonbonded_cutoff",
)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"output folder {output} already exists; choose another or pass --overwrite.")
    if args.recipe is None and not args.ligand and not args.cofactor and args.protein is None:
        raise InputError("nothing to build: give a recipe, or --ligand and/or --protein.")

    from ..building import build_from_recipe, build_system

    options = {dest: getattr(args, dest) for dest in OPTION_DESTS if getattr(args, dest) is not None}
    if args.ligand:
        options["ligands"] = args.ligand
    if args.cofactor:
        options["cofactors"] = args.cofactor
    if args.protein is not None:
        options["protein"] = args.protein
    options["progress"] = not args.quiet
    if args.recipe is not None:
        molecular_system = build_from_recipe(args.recipe, **options)
    else:
        molecular_system = build_system(**options)
    molecular_system.save(output, overwrite=args.overwrite)
    print(summary_line(molecular_system, output), file=sys.stdout)
    return 0


def summary_line(molecular_system, output) -> str:
    """One line: where it went, atom count, box (nm), net charge (e) and region sizes."""
    box = molecular_system.box_vectors
    box_text = "vacuum" if box is None else "box " + " x ".join(f"{edge:.3f}" for edge in box.diagonal()) + " nm"
    regions = ", ".join(f"{name} {len(idx)}" for name, idx in molecular_system.regions.items())
    return (f"built {output}: {molecular_system.n_atoms} atoms, {box_text}, net charge "
            f"{molecular_system.total_charge():+d} e ({regions})")
