"""Assemble ligands, protein, water and ions into one parametrized :class:`MolecularSystem`.

Route: ligands are read and charged (NAGL AM1-BCC by default); the protein is read (or
protonated with PDBFixer); everything is placed with ``openmm.app.Modeller``, which adds
water and ions (neutralizing counter-ions plus the requested ionic strength, Na+/Cl-);
``openmmforcefields.SystemGenerator`` then builds the System with the protein and water
force fields and OpenFF Sage for the small molecules, using the charges assigned above.
Periodic systems use PME with the given real-space cutoff; vacuum systems use no cutoff.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from ..errors import InputError, MlmmError, MlmmWarning
from ..molecular_system import MolecularSystem, MoleculeRecord
from ..units import value_in
from . import forcefields as ffs
from .ligands import Ligand, as_ligand, assign_charges, formal_charges, load_ligand
from .protein import WATER_RESIDUE_NAMES, load_protein

#: two atoms of different molecules closer than this (nm) are a clash, not a contact
CLASH_DISTANCE_NM = 0.12
#: gap (nm) left between a ligand with a generated conformer and the molecules placed before it
SEPARATION_NM = 0.5
#: a posed ligand with no protein atom within this distance (nm) draws a warning: its file and
#: the protein's are probably in different coordinate frames (a bound ligand is within 0.5 nm)
FAR_FROM_PROTEIN_NM = 1.0
STAGES = ("checking options and force fields", "ligands", "protein", "placing", "solvating", "parametrizing",
          "checking charges")


def build_system(
    ligands: Iterable = (),
    protein=None,
    *,
    cofactors: Iterable = (),
    solvent: bool = True,
    padding=1.0,
    box_size=None,
    ionic_strength=0.15,
    neutralize: bool = True,
    small_molecule_forcefield: str = ffs.DEFAULT_SMALL_MOLECULE_FORCEFIELD,
    protein_forcefield: str = ffs.DEFAULT_PROTEIN_FORCEFIELD,
    water_model: str = "tip3p",
    charge_method: str = "nagl",
    constraints: str | None = "hbonds",
    hydrogen_mass=None,
    add_hydrogens_ph: float | None = None,
    nonbonded_cutoff=0.9,
    progress: bool = True,
) -> MolecularSystem:
    """Build a solvated (or vacuum) protein-ligand system.

    Parameters
    ----------
    ligands, cofactors
        Paths (SDF, MOL, MOL2), SMILES strings, ``openff.toolkit.Molecule`` objects or
        :class:`~mlmm.building.Ligand` records (to set residue name and label). Each must
        carry all hydrogens and defined stereochemistry; SMILES get one conformer.
    protein
        Path of a protonated PDB/mmCIF file, or of an unprotonated one with ``add_hydrogens_ph``.
    solvent
        Fill the box with water and ions. ``False`` without ``box_size`` gives a vacuum
        system (no cutoff); ``False`` with ``box_size`` an empty periodic box.
    padding, box_size
        Padding (nm) in OpenMM ``Modeller``'s sense: the smallest distance between a solute
        atom and any periodic image of the solute; the cubic box edge is the diameter of the
        solute's bounding sphere plus ``padding`` (at least ``2 * padding``). Or the box edge
        itself (nm, one number or three), which then takes precedence. Quantities are accepted.
    ionic_strength
        Salt (NaCl) concentration in mol/L added on top of the neutralizing ions.
    small_molecule_forcefield, protein_forcefield, water_model
        ``openff-2.2.1`` (any installed OpenFF name), an OpenMM protein force-field file,
        and ``tip3p``, ``opc`` or ``tip4pew`` (each with its matching ion parameters).
    charge_method
        ``nagl`` (AM1-BCC from the ``openff-gnn-am1bcc-1.0.0.pt`` graph model, offline) or
        ``am1bcc`` (AmberTools).
    constraints
        ``hbonds`` (default), ``none``, ``allbonds`` or ``hangles``; water is always rigid.
    hydrogen_mass
        Hydrogen mass (amu) for hydrogen mass repartitioning (e.g. 3.0), or None.
    nonbonded_cutoff
        Real-space cutoff of PME (nm).
    progress
        Show the build stages as a progress bar on stderr.

    Returns
    -------
    MolecularSystem with regions ``ligand`` (``ligand0``, ``ligand1``, ... for several),
    ``cofactor``, ``protein``, ``solvent`` and ``ions`` where present.
    """
    with _Stages(progress) as stages:
        stages.next()
        options = _check_options(
            solvent=solvent, neutralize=neutralize, padding=padding, box_size=box_size, ionic_strength=ionic_strength,
            small_molecule_forcefield=small_molecule_forcefield, protein_forcefield=protein_forcefield,
            water_model=water_model, charge_method=charge_method, constraints=constraints,
            hydrogen_mass=hydrogen_mass, add_hydrogens_ph=add_hydrogens_ph, nonbonded_cutoff=nonbonded_cutoff,
        )
        entries = [as_ligand(item, "ligand") for item in _as_list(ligands)]
        entries += [as_ligand(item, "cofactor") for item in _as_list(cofactors)]
        if not entries and protein is None:
            raise InputError("nothing to build: give at least one ligand (path or SMILES) or a protein.")

        stages.next()
        molecules, posed = [], []
        for entry in entries:
            molecule, is_posed = load_ligand(entry, options["small_molecule_forcefield"])
            assign_charges(molecule, options["charge_method"])
            molecules.append(molecule)
            posed.append(is_posed)

        stages.next()
        protein_structure = None if protein is None else load_protein(protein, options["add_hydrogens_ph"])

        stages.next()
        modeller, pieces = _place(protein_structure, entries, molecules, posed)
        _check_placement(modeller, pieces, posed)

        stages.next()
        generator = _system_generator(options, molecules, with_protein=protein_structure is not None)
        n_solute = modeller.topology.getNumAtoms()
        _add_solvent_or_box(modeller, generator, options)

        stages.next()
        try:
            system = generator.create_system(modeller.topology)
        except ValueError as exc:
            raise InputError(
                f"the force fields cannot parametrize this system ({exc}); check that every residue is protonated "
                "and covered by the chosen force fields."
            ) from None

        stages.next()
        molecular_system = _molecular_system(
            modeller, system, pieces, protein_structure, entries, molecules, n_solute, options
        )
        _check_charges(molecular_system, molecules, pieces)
    return molecular_system


def _as_list(items) -> list:
    if items is None:
        return []
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable) or hasattr(items, "to_smiles"):
        return [items]
    return list(items)


def _check_options(**opts) -> dict:
    """Validate every option before any expensive work; return them in canonical form."""
    cutoff = value_in(opts["nonbonded_cutoff"], u.nanometer, "nonbonded_cutoff")
    if cutoff <= 0:
        raise InputError(f"nonbonded_cutoff = {cutoff} nm must be positive (e.g. 0.9).")
    padding = value_in(opts["padding"], u.nanometer, "padding")
    if padding < 0:
        raise InputError(f"padding = {padding} nm is negative; give a distance >= 0 nm (e.g. 1.0).")
    box_size = opts["box_size"]
    if box_size is not None:
        if isinstance(box_size, u.Quantity):
            box_size = box_size.value_in_unit(u.nanometer)
        edges = np.atleast_1d(np.asarray(box_size, dtype=float))
        if edges.size == 1:
            edges = np.repeat(edges, 3)
        if edges.size != 3 or np.any(edges <= 0):
            raise InputError(f"box_size = {opts['box_size']!r} must be one or three positive lengths in nm.")
        box_size = edges.tolist()
        if np.any(edges < 2 * cutoff):
            raise InputError(
                f"box_size {box_size} nm is shorter than twice the cutoff ({cutoff} nm); give a larger box or lower "
                "the cutoff."
            )
    ionic_strength = value_in(opts["ionic_strength"], u.molar, "ionic_strength")
    if ionic_strength < 0:
        raise InputError(f"ionic_strength = {ionic_strength} M is negative; give a concentration >= 0 (e.g. 0.15).")
    hydrogen_mass = opts["hydrogen_mass"]
    if hydrogen_mass is not None:
        hydrogen_mass = value_in(hydrogen_mass, u.amu, "hydrogen_mass")
        if not 1.0 <= hydrogen_mass <= 5.0:
            raise InputError(f"hydrogen_mass = {hydrogen_mass} amu is outside 1..5; use e.g. 3.0 (or None for no HMR).")
    ph = opts["add_hydrogens_ph"]
    if ph is not None:
        ph = value_in(ph, u.dimensionless, "add_hydrogens_ph")
        if not 0.0 <= ph <= 14.0:
            raise InputError(f"add_hydrogens pH = {ph} is outside 0..14; give a pH such as 7.4.")
    constraints_name = "none" if opts["constraints"] is None else str(opts["constraints"]).lower()
    return {
        "solvent": bool(opts["solvent"]),
        "neutralize": bool(opts["neutralize"]),
        "padding": padding,
        "box_size": box_size,
        "ionic_strength": ionic_strength,
        "nonbonded_cutoff": cutoff,
        "hydrogen_mass": hydrogen_mass,
        "add_hydrogens_ph": ph,
        "small_molecule_forcefield": ffs.check_small_molecule_forcefield(opts["small_molecule_forcefield"]),
        "protein_forcefield": ffs.check_protein_forcefield(opts["protein_forcefield"]),
        "water": ffs.check_water_model(opts["water_model"]),
        "charge_method": ffs.check_charge_method(opts["charge_method"]),
        "constraints": ffs.check_constraints(constraints_name),
        "constraints_name": constraints_name,
    }


def _place(protein_structure, entries: list[Ligand], molecules: list, posed: list[bool]) -> tuple[app.Modeller, dict]:
    """Put the protein and the ligands into one Modeller; return it and each piece's atom indices.

    Posed ligands (from files) keep their coordinates. A ligand whose conformer was generated
    (SMILES) is set beside everything placed before it, SEPARATION_NM beyond its bounding
    box along x, so that it starts in the solvent rather than on top of another molecule.
    """
    modeller = app.Modeller(app.Topology(), [])
    pieces = {"protein": np.arange(0), "ligands": []}
    if protein_structure is not None:
        modeller.add(protein_structure.topology, protein_structure.positions * u.nanometer)
        pieces["protein"] = np.arange(protein_structure.topology.getNumAtoms())
    for entry, molecule, is_posed in zip(entries, molecules, posed):
        molecule.generate_unique_atom_names()
        topology = molecule.to_topology().to_openmm()
        for residue in topology.residues():
            residue.name = entry.resname
        start = modeller.topology.getNumAtoms()
        coordinates = molecule.conformers[0].m_as("nanometer")
        if not is_posed and start > 0:
            placed = np.array(modeller.positions.value_in_unit(u.nanometer))
            shift = (placed.min(axis=0) + placed.max(axis=0)) / 2 - coordinates.mean(axis=0)
            shift[0] = placed[:, 0].max() + SEPARATION_NM - coordinates[:, 0].min()
            coordinates = coordinates + shift
        modeller.add(topology, coordinates * u.nanometer)
        pieces["ligands"].append(np.arange(start, modeller.topology.getNumAtoms()))
    return modeller, pieces


def _check_placement(modeller: app.Modeller, pieces: dict, posed: list[bool]) -> None:
    """Refuse ligands that overlap the protein or each other (closer than CLASH_DISTANCE_NM);
    warn about a posed ligand farther than FAR_FROM_PROTEIN_NM from every protein atom."""
    positions = np.array(modeller.positions.value_in_unit(u.nanometer))
    atoms = list(modeller.topology.atoms())
    others = [pieces["protein"]] if pieces["protein"].size else []
    for ligand_atoms, is_posed in zip(pieces["ligands"], posed):
        for other in others:
            nearest = np.inf
            for i in ligand_atoms:  # one row at a time: memory stays O(protein atoms)
                distances = np.linalg.norm(positions[other] - positions[i], axis=1)
                j = int(np.argmin(distances))
                nearest = min(nearest, distances[j])
                if distances[j] < CLASH_DISTANCE_NM:
                    a, b = atoms[i], atoms[other[j]]
                    raise InputError(
                        f"ligand {a.residue.name} atom {a.name} clashes with residue {b.residue.name} "
                        f"{b.residue.id} atom {b.name} ({distances[j]:.3f} nm apart, less than {CLASH_DISTANCE_NM} "
                        "nm); check that the ligand is posed in the protein's coordinate frame, or dock it again."
                    )
            if is_posed and other is pieces["protein"] and nearest > FAR_FROM_PROTEIN_NM:
                name = atoms[ligand_atoms[0]].residue.name
                warnings.warn(
                    f"ligand {name} is {nearest:.1f} nm from the nearest protein atom: its file and the protein's may "
                    "be in different coordinate frames (a bound ligand is within 0.5 nm). The box is built around "
                    "both as they are; pose the ligand in the protein's frame for a complex.", MlmmWarning, stacklevel=3)
        others.append(ligand_atoms)


def _system_generator(options: dict, molecules: list, with_protein: bool):
    """openmmforcefields' SystemGenerator: water (and protein) ffxml plus OpenFF for the molecules,
    which carry their charges already (the generator uses them instead of computing its own)."""
    from openmmforcefields.generators import SystemGenerator

    forcefield_kwargs = {"constraints": options["constraints"], "rigidWater": True, "removeCMMotion": True}
    if options["hydrogen_mass"] is not None:
        forcefield_kwargs["hydrogenMass"] = options["hydrogen_mass"] * u.amu
    return SystemGenerator(
        forcefields=([options["protein_forcefield"]] if with_protein else []) + [options["water"].ffxml],
        small_molecule_forcefield=options["small_molecule_forcefield"],
        molecules=molecules,
        forcefield_kwargs=forcefield_kwargs,
        periodic_forcefield_kwargs={
            "nonbondedMethod": app.PME, "nonbondedCutoff": options["nonbonded_cutoff"] * u.nanometer,
        },
        nonperiodic_forcefield_kwargs={"nonbondedMethod": app.NoCutoff},
    )


def _add_solvent_or_box(modeller: app.Modeller, generator, options: dict) -> None:
    positions = np.array(modeller.positions.value_in_unit(u.nanometer))
    extent = positions.max(axis=0) - positions.min(axis=0)
    box = options["box_size"]
    if box is not None and np.any(np.asarray(box) < extent):
        raise InputError(
            f"box_size {box} nm is smaller than the solute ({np.round(extent, 2).tolist()} nm); give a larger box "
            "or use padding instead."
        )
    if options["solvent"]:
        kwargs = {"boxSize": openmm.Vec3(*box) * u.nanometer} if box is not None else {
            "padding": options["padding"] * u.nanometer}
        modeller.addSolvent(
            generator.forcefield, model=options["water"].modeller_model,
            ionicStrength=options["ionic_strength"] * u.molar,
            neutralize=options["neutralize"], positiveIon="Na+", negativeIon="Cl-", **kwargs,
        )
    elif box is not None:
        center = (positions.max(axis=0) + positions.min(axis=0)) / 2
        modeller.positions = (positions - center + np.asarray(box) / 2) * u.nanometer
        modeller.topology.setPeriodicBoxVectors(np.diag(box) * u.nanometer)
    else:
        return
    edges = np.diag(np.array(modeller.topology.getPeriodicBoxVectors().value_in_unit(u.nanometer)))
    if np.any(edges < 2 * options["nonbonded_cutoff"]):
        raise InputError(
            f"box edges {np.round(edges, 3).tolist()} nm are shorter than twice the cutoff "
            f"({options['nonbonded_cutoff']} nm); increase padding or box_size, or lower the cutoff."
        )


def _molecular_system(modeller, system, pieces, protein_structure, entries, molecules, n_solute, options):
    topology = modeller.topology
    positions = np.array(modeller.positions.value_in_unit(u.nanometer))
    n_atoms = topology.getNumAtoms()
    formal = np.zeros(n_atoms, dtype=np.int64)
    if protein_structure is not None:
        formal[pieces["protein"]] = protein_structure.formal_charges
    for atoms, molecule in zip(pieces["ligands"], molecules):
        formal[atoms] = formal_charges(molecule)
    water, ions = _water_and_ions(topology, pieces)
    charges = _nonbonded_charges(system)
    for indices in ions.values():
        added = [i for i in indices if i >= n_solute]  # added by Modeller: the charge is the ion's formal charge
        formal[added] = np.round(charges[added]).astype(np.int64)
    ion_atoms = np.array(sorted(i for indices in ions.values() for i in indices), dtype=np.int64)
    protein_atoms = np.setdiff1d(pieces["protein"], np.concatenate([water, ion_atoms]))

    regions, records = {}, []
    for role in ("ligand", "cofactor"):
        members = [(atoms, entry, molecule) for atoms, entry, molecule in zip(pieces["ligands"], entries, molecules)
                   if entry.role == role]
        if members:
            regions[role] = np.concatenate([atoms for atoms, _, _ in members])
        for k, (atoms, entry, molecule) in enumerate(members):
            if len(members) > 1:
                regions[f"{role}{k}"] = atoms
            records.append(MoleculeRecord(entry.name, role, atoms.tolist(), int(formal[atoms].sum()),
                                          molecule.to_smiles(mapped=True)))
    if protein_atoms.size:
        regions["protein"] = protein_atoms
        chains, is_protein = {}, np.zeros(n_atoms, dtype=bool)
        is_protein[protein_atoms] = True
        for atom in topology.atoms():
            if is_protein[atom.index]:
                chains.setdefault(atom.residue.chain.id, []).append(atom.index)
        for chain, atoms in chains.items():
            records.append(MoleculeRecord(f"protein chain {chain}", "protein", atoms, int(formal[atoms].sum())))
    if water.size:
        regions["solvent"] = water
        records.append(MoleculeRecord(f"water ({options['water'].name})", "solvent", water.tolist(), 0))
    if ion_atoms.size:
        regions["ions"] = ion_atoms
        for name, atoms in ions.items():
            records.append(MoleculeRecord(name, "ion", atoms, int(formal[atoms].sum())))

    metadata = _metadata(options, entries, protein_structure, system)
    return MolecularSystem(topology, positions, system, regions, formal, records, metadata)


def _water_and_ions(topology: app.Topology, pieces: dict) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Water atoms (virtual sites included) and monatomic ions by residue name, ligands excluded."""
    in_ligand = np.zeros(topology.getNumAtoms(), dtype=bool)
    for atoms in pieces["ligands"]:
        in_ligand[atoms] = True
    water, ions = [], {}
    for residue in topology.residues():
        indices = [atom.index for atom in residue.atoms()]
        if in_ligand[indices[0]]:
            continue
        if residue.name in WATER_RESIDUE_NAMES:
            water.extend(indices)
        elif len(indices) == 1:
            ions.setdefault(residue.name, []).extend(indices)
    return np.array(water, dtype=np.int64), ions


def _nonbonded_charges(system: openmm.System) -> np.ndarray:
    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return np.array([force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                     for i in range(system.getNumParticles())])


def _check_charges(molecular_system: MolecularSystem, molecules: list, pieces: dict) -> None:
    """The System must use the assigned ligand charges and carry the formal net charge."""
    charges = _nonbonded_charges(molecular_system.system)
    for atoms, molecule in zip(pieces["ligands"], molecules):
        expected = molecule.partial_charges.m_as("elementary_charge")
        if not np.allclose(charges[atoms], expected, atol=1e-6):
            raise MlmmError(f"the System's charges of ligand {molecule.name!r} differ from the assigned ones.")
    total, formal = charges.sum(), molecular_system.total_charge()
    if abs(total - formal) > 1e-4:
        raise MlmmError(f"the System's net charge {total:.6f} e differs from the sum of formal charges {formal} e.")


def _metadata(options, entries, protein_structure, system) -> dict:
    import openff.toolkit
    import openmmforcefields

    periodic = system.usesPeriodicBoundaryConditions()
    return {
        "builder": "mlmm.building.build_system",
        "forcefields": {
            "small_molecule": options["small_molecule_forcefield"],
            "protein": None if protein_structure is None else options["protein_forcefield"],
            "water": options["water"].ffxml,
        },
        "water_model": options["water"].name,
        "charge_method": options["charge_method"],
        "nagl_model": ffs.NAGL_MODEL if options["charge_method"] == "nagl" else None,
        "nonbonded_method": "PME" if periodic else "NoCutoff",
        "nonbonded_cutoff_nm": options["nonbonded_cutoff"] if periodic else None,
        "constraints": options["constraints_name"],
        "rigid_water": True,
        "hydrogen_mass_amu": options["hydrogen_mass"],
        "solvent": options["solvent"],
        "padding_nm": options["padding"],
        "box_size_nm": options["box_size"],
        "ionic_strength_molar": options["ionic_strength"],
        "neutralize": options["neutralize"],
        "add_hydrogens_ph": options["add_hydrogens_ph"],
        "ligands": [
            {"name": e.name, "role": e.role, "resname": e.resname, "source": _describe_source(e.source)}
            for e in entries
        ],
        "protein": None if protein_structure is None else protein_structure.source,
        "versions": {
            "openmm": openmm.__version__,
            "openff.toolkit": openff.toolkit.__version__,
            "openmmforcefields": openmmforcefields.__version__,
        },
    }


def _describe_source(source) -> str:
    """A ligand's origin for the metadata: its path, its SMILES or a Molecule's SMILES."""
    return source.to_smiles() if hasattr(source, "to_smiles") else str(source)


class _Stages(contextlib.AbstractContextManager):
    """The build stages as a tqdm bar on stderr (silent when ``progress`` is False)."""

    def __init__(self, progress: bool):
        from tqdm import tqdm

        self._bar = tqdm(total=len(STAGES), disable=not progress, file=sys.stderr, unit="stage",
                         bar_format="{desc:<40}{bar:20}| {n_fmt}/{total_fmt} [{elapsed}]")
        self._index = -1

    def next(self) -> None:
        if self._index >= 0:
            self._bar.update(1)
        self._index += 1
        self._bar.set_description_str(f"build: {STAGES[self._index]}")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._bar.update(1)
            self._bar.set_description_str("build: done")
        self._bar.close()
        return False
