#!/usr/bin/python3 -I
# The compliance benchmark's guest side (bench/compliance.ts): reads what oscap wrote, in the VM,
# with the guest's own python3 (stdlib only). Prints plain lines for the benchmark to parse.
#   selected GUIDE.html          the rule ids a profile selects, one per line (oscap's own guide)
#   results RESULTS.xml          "RULE RESULT" for each rule the run evaluated (not "notselected")
#   merge OUT.xml BATCH.xml...   one XCCDF results file: the first batch's, each rule's result taken
#                                from the batch that evaluated it (for `oscap xccdf generate report`)
import re
import sys
import xml.etree.ElementTree as ET

XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"
RULE_ID = re.compile(r'<h4 id="(xccdf_org\.ssgproject\.content_rule_[a-z0-9_]+)"')


def selected(guide):
    with open(guide, encoding="utf-8") as f:
        seen = dict.fromkeys(RULE_ID.findall(f.read()))
    for rule in seen:
        print(rule)


def test_results(tree):
    found = tree.getroot().iter(f"{XCCDF}TestResult")
    result = next(found, None)
    if result is None:
        sys.exit("no TestResult in the results file")
    return result


def evaluated(result):
    for rr in result.findall(f"{XCCDF}rule-result"):
        value = rr.findtext(f"{XCCDF}result")
        if value and value != "notselected":
            yield rr, value


def results(path):
    for rr, value in evaluated(test_results(ET.parse(path))):
        print(rr.get("idref"), value)


def merge(out, first, *others):
    ET.register_namespace("", XCCDF[1:-1])
    tree = ET.parse(first)
    into = test_results(tree)
    slots = {rr.get("idref"): i for i, rr in enumerate(into) if rr.tag == f"{XCCDF}rule-result"}
    for path in others:
        for rr, _ in evaluated(test_results(ET.parse(path))):
            i = slots.get(rr.get("idref"))
            if i is None:
                into.append(rr)
            else:
                into[i] = rr
    # Each batch scored only its own rules: the first batch's scores would mislead. XCCDF 1.2 wants
    # at least one score; the merged one is the flat unweighted model's: rules passed, of those that
    # passed or failed.
    for score in into.findall(f"{XCCDF}score"):
        into.remove(score)
    results = [value for _, value in evaluated(into)]
    score = ET.Element(f"{XCCDF}score", {"system": "urn:xccdf:scoring:flat-unweighted", "maximum": str(results.count("pass") + results.count("fail"))})
    score.text = str(results.count("pass"))
    last = max(i for i, child in enumerate(into) if child.tag == f"{XCCDF}rule-result")
    into.insert(last + 1, score)
    tree.write(out, encoding="utf-8", xml_declaration=True)


COMMANDS = {"selected": selected, "results": results, "merge": merge}
if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: {sys.argv[0]} selected GUIDE | results RESULTS | merge OUT FIRST [MORE...]")
COMMANDS[sys.argv[1]](*sys.argv[2:])
