"""``mlmm models``: the installed ML potential plugins and whether each can run here."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the ML potentials (plugins) and whether their weights are present",
        description="List the ML potential plugins found through the 'mlmm.potentials' entry points: "
        "elements covered, charged-region support, atomic charges, and whether the model can run here.",
    )
    parser.set_defaults(handler=run)


def model_rows() -> list[dict]:
    """One row per installed plugin: name, elements, charge support, charges, status, description."""
    from openmm.app.element import Element

    from ..errors import MlmmError
    from ..potentials import load_plugin, plugin_names

    rows = []
    for name in plugin_names():
        try:
            plugin = load_plugin(name)
        except MlmmError as exc:
            rows.append({"name": name, "elements": "?", "charged": "?", "charges": "?", "ready": False,
                         "status": str(exc), "description": ""})
            continue
        elements = (
            "from the file" if plugin.elements is None
            else " ".join(Element.getByAtomicNumber(z).symbol for z in sorted(plugin.elements))
        )
        status = plugin.status()
        rows.append({
            "name": name,
            "elements": elements,
            "charged": "yes" if plugin.supports_charge else "no",
            "charges": {True: "yes", False: "no", None: "if the model file returns them"}[plugin.provides_charges],
            "ready": plugin.weights_available(),
            "status": status,
            "description": plugin.description,
        })
    return rows


def run(args) -> int:
    rows = model_rows()
    if not rows:
        print("no ML potential plugins installed (entry-point group 'mlmm.potentials')")
        return 0
    for row in rows:
        print(f"{row['name']}: {row['description']}")
        print(f"    elements:        {row['elements']}")
        print(f"    charged regions: {row['charged']}    atomic charges: {row['charges']}")
        print(f"    weights present: {'yes' if row['ready'] else 'no'} - {row['status']}")
    return 0
