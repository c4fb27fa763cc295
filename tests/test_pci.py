"""dumpkit's PCI collection against the ground truth taken inside the guests."""

from __future__ import annotations

import json

import matplotlib
import pytest
from conftest import CAPTURE_KERNEL_DUMPS, DUMPS, dump_id, dump_path, ground_truth_pci

import dumpkit
from dumpkit.pci import collect_pci
from dumpkit.pci.render import detail_text, plot_tree, to_frame, to_json, tree_text

matplotlib.use("Agg")


@pytest.fixture(scope="module", params=DUMPS, ids=dump_id)
def case(request):
    entry = request.param
    dump = dumpkit.open(dump_path(entry))
    truth = ground_truth_pci(entry["scenario"], capture=entry in CAPTURE_KERNEL_DUMPS)
    return entry, dump, collect_pci(dump.prog), truth


def test_same_functions_as_ground_truth(case):
    _entry, _dump, tree, truth = case
    assert [d.bdf for d in tree] == sorted(truth)


def test_identity_and_topology_match_sysfs(case):
    _entry, _dump, tree, truth = case
    for dev in tree:
        gt = truth[dev.bdf]
        assert (dev.vendor, dev.device, dev.class_code, dev.revision) == \
               (gt["vendor"], gt["device"], gt["class"], gt["revision"]), dev.bdf
        assert (dev.subsystem_vendor, dev.subsystem_device) == \
               (gt["subsystem_vendor"], gt["subsystem_device"]), dev.bdf
        assert dev.header_type == gt["header_type"], dev.bdf
        assert dev.parent == gt["parent_bridge"], dev.bdf
        assert dev.pcie_port_type == gt["pcie_port_type"], dev.bdf
        if dev.is_bridge:
            assert (dev.secondary_bus, dev.subordinate_bus) == (gt["secondary_bus"], gt["subordinate_bus"])


def test_driver_enable_power_group_match_sysfs(case):
    _entry, _dump, tree, truth = case
    for dev in tree:
        gt = truth[dev.bdf]
        assert dev.driver == gt["driver"], dev.bdf
        assert dev.enable_count == gt["enable"], dev.bdf
        assert dev.power_state == gt["power_state"], dev.bdf
        assert dev.iommu_group == gt["iommu_group"], dev.bdf
        assert ",".join(dev.reset_methods or ()) == (gt["reset_method"] or "").replace(" ", ","), dev.bdf
        assert dev.unknown == {}, dev.bdf


def test_kernel_bus_master_flag_agrees_with_config_space_for_bound_devices(case):
    """is_busmaster is the kernel's software flag; for devices a driver enabled it must
    equal the Command register read in the guest. Unbound functions may differ (firmware
    or QEMU leaves Bus Master on), and that difference is what the flag cannot show."""
    _entry, _dump, tree, truth = case
    for dev in tree:
        if dev.driver:
            assert dev.is_busmaster == truth[dev.bdf]["bus_master"], dev.bdf


def test_dma_capable_endpoints_are_the_enabled_bus_masters(case):
    entry, _dump, tree, truth = case
    capable = {d.bdf for d in tree if d.could_dma}
    expected = {b for b, gt in truth.items()
                if gt["driver"] and gt["enable"] and gt["bus_master"] and gt["header_type"] == 0
                and gt["class"] >> 8 != 0x0600}
    assert capable == expected
    nic = next(b for b, gt in truth.items() if gt["driver"] == "e1000e")
    assert nic in capable
    xhci = next(b for b, gt in truth.items() if gt["class"] >> 8 == 0x0C03)
    assert tree.get(xhci).could_dma is False and "no driver bound" in tree.get(xhci).could_dma_reason


def test_ids_get_names_from_pci_ids(case):
    _entry, _dump, tree, _truth = case
    nic = next(d for d in tree if d.driver == "e1000e")
    assert nic.device_name == "82574L Gigabit Network Connection"
    assert nic.vendor_name.startswith("Intel")
    assert nic.class_name == "Ethernet controller"


def test_renderers_agree_with_the_collection(case):
    _entry, _dump, tree, _truth = case
    text = tree_text(tree)
    # lspci -tv names a function by dev.fn under its bus; each line's last function is marked
    # with its full BDF, so every endpoint's BDF is there
    assert all(f"{dev.bdf[-4:]}" in text for dev in tree)
    assert all(dev.bdf in text for dev in tree if not dev.is_bridge)
    assert all(dev.bdf in detail_text(tree) for dev in tree)
    assert sum("<DMA" in line for line in text.splitlines()) == sum(bool(d.could_dma) for d in tree)
    frame = to_frame(tree)
    assert list(frame.index) == [d.bdf for d in tree]
    assert frame["could_dma"].tolist() == [d.could_dma for d in tree]
    data = json.loads(to_json(tree))
    assert [d["bdf"] for d in data["devices"]] == [d.bdf for d in tree]
    ax = plot_tree(tree)
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == len(tree) and all(d.bdf[5:] in "".join(labels) for d in tree)
    matplotlib.pyplot.close(ax.figure)


def test_tree_picture_stays_readable_with_many_functions():
    """The sample tree grown to 33 functions (copies of a real endpoint behind the empty
    switch port and on the root bus): no two labels overlap and the legend is there."""
    import dataclasses

    from dumpkit.pci.collect import PciTree

    tree = collect_pci(dumpkit.open(dump_path(DUMPS[0])).prog)
    ep = next(d for d in tree if d.driver == "virtio-pci" and d.parent)
    port = next(d.bdf for d in tree if d.pcie_port_type == "downstream_port" and not tree.children(d.bdf))
    extra = [dataclasses.replace(ep, bdf=f"0000:{0x70:02x}:00.{i}", parent=port) for i in range(8)]
    extra += [dataclasses.replace(ep, bdf=f"0000:00:{0x10 + i:02x}.0", parent=None) for i in range(6)]
    big = PciTree(sorted(list(tree) + extra, key=lambda d: d.bdf))
    assert len(big) >= 30
    ax = plot_tree(big)
    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert ax.get_legend() is not None
    matplotlib.pyplot.close(ax.figure)
