#!/usr/bin/env python3
"""Invariants of template.yaml that cfn-lint cannot see (it does not evaluate Rules or read our docs).

    python infra/check-template.py [template.yaml [docs/template-parameters.md]]

Run by infra/lint-template.sh inside its venv (it needs cfnlint.decode, which reads the YAML short tags).
Offline. Prints one line per broken invariant, naming what is wrong, and exits 1; prints nothing on success.
"""
import itertools
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

REPO = Path(__file__).resolve().parent.parent
ESM_LIMIT = 22  # SourceAccessConfigurations: "Maximum number of 22 items" (Lambda API reference)
ESMS = ("ConsumerMskEventSourceMapping", "ConsumerSelfManagedEventSourceMapping")
# Destination choices without a resource of their own (the topic lives in the cluster), and without an
# operator statement (SNS is redriven from the operator's own subscribed queue).
NO_RESOURCE = {"kafka"}
NO_REDRIVE_STATEMENT = {"sns"}
# DynamoDB calls of the store that production code never makes (`create_table`, for local stacks and tests).
STORE_SETUP_CALLS = {"create_table", "describe_table", "update_time_to_live"}

problems = []


def problem(text):
    problems.append(text)


def walk(node):
    """Every dict and list inside node, node included."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def no_value(node):
    return node == {"Ref": "AWS::NoValue"}


class Evaluator:
    """Conditions evaluated for one OnFailureDestinationType value, other parameters unknown, except that
    a value the Rules require to be non-empty for that choice is non-empty (True / False / None = unknown)."""

    def __init__(self, template, choice):
        self.conditions, self.choice, self.given = template["Conditions"], choice, set()
        for rule in template.get("Rules", {}).values():
            if "RuleCondition" not in rule or self.value(rule["RuleCondition"]) is True:
                for assertion in rule["Assertions"]:
                    test = assertion["Assert"]
                    equals = test.get("Fn::Not", [{}])[0].get("Fn::Equals") if isinstance(test, dict) else None
                    if equals and equals[1] == "" and "Ref" in equals[0]:
                        self.given.add(equals[0]["Ref"])

    def value(self, node):
        if "Condition" in node:
            return self.value(self.conditions[node["Condition"]])
        (function, args), = node.items()
        if function == "Fn::Equals":
            left, right = args
            if left == {"Ref": "OnFailureDestinationType"} and isinstance(right, str):
                return right == self.choice
            return False if right == "" and left.get("Ref") in self.given else None
        values = [self.value(a) for a in args]
        if function == "Fn::Not":
            return None if values[0] is None else not values[0]
        if function == "Fn::And":
            return False if False in values else True if all(values) else None
        return True if True in values else False if all(v is False for v in values) else None  # Fn::Or

    def resolve(self, node):
        """node with every Fn::If decided; None where a condition is unknown."""
        if isinstance(node, dict) and "Fn::If" in node:
            name, yes, no = node["Fn::If"]
            decided = self.value({"Condition": name})
            return None if decided is None else self.resolve(yes if decided else no)
        if isinstance(node, dict):
            return {k: self.resolve(v) for k, v in node.items()}
        return [self.resolve(v) for v in node] if isinstance(node, list) else node


def implies(evaluators, name, choice):
    """Condition name holds only when OnFailureDestinationType is choice."""
    return all(e.value({"Condition": name}) is False for c, e in evaluators.items() if c != choice)


def guarded_statements(resource, evaluators, choice):
    return [s["Fn::If"][1] for s in statements(resource) if isinstance(s, dict) and "Fn::If" in s
            and not no_value(s["Fn::If"][1]) and implies(evaluators, s["Fn::If"][0], choice)]


def max_entries(node):
    """Most entries a (possibly Fn::If-wrapped) list can have once conditions are resolved."""
    if isinstance(node, dict) and "Fn::If" in node:
        return max(max_entries(branch) for branch in node["Fn::If"][1:])
    if no_value(node):
        return 0
    return sum(0 if isinstance(i, dict) and "Fn::If" in i and all(map(no_value, i["Fn::If"][1:])) else 1 for i in node)


def entry_types(item):
    return {n["Type"] for n in walk(item) if isinstance(n, dict) and isinstance(n.get("Type"), str)}


def statements(resource):
    document = resource["Properties"].get("PolicyDocument")
    documents = [document] if document else [p["PolicyDocument"] for p in resource["Properties"]["Policies"]]
    return [s for d in documents for s in d["Statement"]]


def truth_table(conditions, parameters, names, extra=()):
    """Every assignment of the parameters the named conditions read (plus extra), each with a function
    that evaluates a condition under it. A parameter takes its AllowedValues, else each value a condition
    compares it with plus one other non-empty value."""
    compared = {}

    def scan(node):
        if isinstance(node, dict) and "Condition" in node and len(node) == 1:
            scan(conditions[node["Condition"]])
        elif isinstance(node, dict) and "Fn::Equals" in node:
            refs = [a["Ref"] for a in node["Fn::Equals"] if isinstance(a, dict) and "Ref" in a]
            literals = [a for a in node["Fn::Equals"] if isinstance(a, str)]
            if len(refs) != 1 or len(literals) != 1:
                raise ValueError(f"cannot evaluate {node}")
            compared.setdefault(refs[0], set()).add(literals[0])
        elif isinstance(node, dict):
            (args,) = node.values()
            for a in args:
                scan(a)

    for name in names:
        scan({"Condition": name})
    for name in extra:
        compared.setdefault(name, {""})
    domains = {p: parameters[p].get("AllowedValues") or sorted(v | {"<other>"}) for p, v in compared.items()}

    def evaluate(node, values):
        if "Condition" in node and len(node) == 1:
            return evaluate(conditions[node["Condition"]], values)
        (function, args), = node.items()
        if function == "Fn::Equals":
            ref = next(a["Ref"] for a in args if isinstance(a, dict))
            return values[ref] == next(a for a in args if isinstance(a, str))
        results = [evaluate(a, values) for a in args]
        return {"Fn::Not": lambda: not results[0], "Fn::And": lambda: all(results),
                "Fn::Or": lambda: any(results)}[function]()

    rows = [dict(zip(domains, combo)) for combo in itertools.product(*domains.values())]
    return [(row, lambda name, row=row: evaluate({"Condition": name}, row)) for row in rows]


def secret_grants(resource, action):
    """(statement condition or None, resource node) for each statement of resource allowing action."""
    for s in statements(resource):
        condition = None
        if isinstance(s, dict) and "Fn::If" in s:
            condition, s = s["Fn::If"][0], s["Fn::If"][1]
        if no_value(s) or s.get("Effect") != "Allow":
            continue
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if action in actions:
            yield condition, s["Resource"]


def granted_to(resource_node, parameter):
    """None when resource_node never names Ref parameter; else the condition it is named under ("" = always)."""
    items = resource_node if isinstance(resource_node, list) else [resource_node]
    for item in items:
        if item == {"Ref": parameter}:
            return ""
        if isinstance(item, dict) and "Fn::If" in item and item["Fn::If"][1] == {"Ref": parameter}:
            return item["Fn::If"][0]
    return None


def check(template_path, docs_path):
    template, matches = decode(str(template_path))
    if matches:
        sys.exit(f"check-template: cannot read {template_path}: {matches[0]}")
    parameters, conditions, resources = template["Parameters"], template["Conditions"], template["Resources"]

    # 1. Every on-failure destination choice is wired end to end, each part present only for that choice.
    choices = parameters["OnFailureDestinationType"]["AllowedValues"]
    evaluators = {c: Evaluator(template, c) for c in choices}
    for choice, evaluator in evaluators.items():
        own = {n for n, r in resources.items() if r["Type"] != "AWS::CloudWatch::Alarm"
               and "Condition" in r and implies(evaluators, r["Condition"], choice)}
        if choice not in NO_RESOURCE and not own:
            problem(f"destination {choice}: no resource exists for it alone")
        if not guarded_statements(resources["ConsumerRole"], evaluators, choice):
            problem(f"destination {choice}: ConsumerRole has no statement for it alone (the mapping writes with it)")
        if choice not in NO_REDRIVE_STATEMENT and not guarded_statements(
                resources["RedriveOperatorPolicy"], evaluators, choice):
            problem(f"destination {choice}: RedriveOperatorPolicy has no statement for it alone")
        if not any(r["Type"] == "AWS::CloudWatch::Alarm" and "Condition" in r
                   and evaluator.value({"Condition": r["Condition"]}) is not False
                   and any(e.value({"Condition": r["Condition"]}) is False for e in evaluators.values())
                   for r in resources.values()):
            problem(f"destination {choice}: no alarm watches it")
        for esm in ESMS:
            config = evaluator.resolve(resources[esm]["Properties"].get("DestinationConfig"))
            target = (config or {}).get("OnFailure", {}).get("Destination")
            names = {n.get("Ref") or (n.get("Fn::GetAtt") or [None])[0] for n in walk(target) if isinstance(n, dict)}
            wired = "kafka://" in str(target) if choice in NO_RESOURCE else bool(names & own)
            if not wired:
                problem(f"destination {choice}: {esm} DestinationConfig resolves to {target!r}")

    # 2. SourceAccessConfigurations stay within the API's limit, and the VPC parameters' patterns allow
    #    exactly as many ids as the self-managed mapping has entries for.
    for esm in ESMS:
        entries = resources[esm]["Properties"].get("SourceAccessConfigurations", {"Ref": "AWS::NoValue"})
        if max_entries(entries) > ESM_LIMIT:
            problem(f"{esm}: up to {max_entries(entries)} SourceAccessConfigurations, the API takes {ESM_LIMIT}")
    entries = resources["ConsumerSelfManagedEventSourceMapping"]["Properties"]["SourceAccessConfigurations"]
    for parameter, kind in (("VpcSubnetIds", "VPC_SUBNET"), ("VpcSecurityGroupIds", "VPC_SECURITY_GROUP")):
        bound = re.search(r"\{0,(\d+)\}\$$", parameters[parameter].get("AllowedPattern", ""))
        allowed = int(bound.group(1)) + 1 if bound else None
        have = sum(1 for item in entries if kind in entry_types(item))
        if allowed != have:
            problem(f"{parameter}: its AllowedPattern allows {allowed or 'any number of'} ids but the "
                    f"self-managed mapping has {have} {kind} entries")

    # 3. Statement ids are unique within each policy.
    for name, resource in resources.items():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            sids = [n["Sid"] for s in statements(resource) for n in walk(s) if isinstance(n, dict) and "Sid" in n]
            for sid in sorted({s for s in sids if sids.count(s) > 1}):
                problem(f"{name}: Sid {sid} is used twice")

    # 4. The idempotency table's IAM is exactly the DynamoDB calls the store makes.
    store = (REPO / "kafka-esm/src/idempotency/dynamodb.rs").read_text().split("#[cfg(test)]")[0]
    calls = set(re.findall(r"^\s*\.(\w+)\(\)\s*$", store, re.M)) - STORE_SETUP_CALLS
    # A transaction has no IAM action of its own: each action in it needs its plain one (PutItem for
    # a Put), and the store's transactions hold only Puts, which PutItem below covers.
    wanted = {"dynamodb:" + "".join(w.capitalize() for w in c.split("_")) for c in calls
              if re.fullmatch(r"batch_(get|write)_item|(get|put|update|delete)_item|query|scan", c)}
    if "transact_write_items" in calls:
        wanted.add("dynamodb:PutItem")
    for name in ("ConsumerRole", "RedriveOperatorPolicy"):
        granted = set()
        for s in statements(resources[name]):
            if isinstance(s, dict) and s.get("Sid") == "IdempotencyTable":
                granted = set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        if granted != wanted:
            problem(f"{name} IdempotencyTable: grants {sorted(granted)}, the store calls {sorted(wanted)}")

    # 5. Every parameter is documented in the docs' parameter tables and in a console group, and vice versa.
    docs = docs_path.read_text()
    section = docs.split("\n## Parameters\n", 1)[-1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.M)
    grouped = [p for g in template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
               for p in g["Parameters"]]
    for where, listed in ((docs_path.name, documented), ("Metadata ParameterGroups", grouped)):
        for name in sorted(set(parameters) - set(listed)):
            problem(f"parameter {name} is not in {where}")
        for name in sorted(set(listed) - set(parameters)):
            problem(f"{where} lists {name}, which is not a template parameter")
        for name in sorted({n for n in listed if listed.count(n) > 1}):
            problem(f"{where} lists {name} twice")

    # 6. Every secret a function reads (an environment variable *_SECRET_ARN: !If [C, !Ref P, NoValue]) is
    #    granted to its role: secretsmanager:GetSecretValue on P whenever C holds, and kms:Decrypt on
    #    SecretsKmsKeyArn whenever C holds and that key is given.
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        role = resources[resource["Properties"]["Role"]["Fn::GetAtt"][0]]
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for variable, value in variables.items():
            if not variable.endswith("_SECRET_ARN"):
                continue
            if not (isinstance(value, dict) and "Fn::If" in value and no_value(value["Fn::If"][2])
                    and "Ref" in value["Fn::If"][1]):
                problem(f"{name} {variable}: expected !If [Condition, !Ref Parameter, !Ref AWS::NoValue]")
                continue
            reads, parameter = value["Fn::If"][0], value["Fn::If"][1]["Ref"]
            grants = [(c, granted_to(r, parameter)) for c, r in secret_grants(role, "secretsmanager:GetSecretValue")]
            grants = [(c, inner) for c, inner in grants if inner is not None]
            keys = [c for c, r in secret_grants(role, "kms:Decrypt") if r == {"Ref": "SecretsKmsKeyArn"}]
            names = [reads] + [c for g in grants for c in g if c] + [c for c in keys if c]
            table = truth_table(conditions, parameters, names, extra=["SecretsKmsKeyArn"])
            for row, holds in table:
                if not holds(reads):
                    continue
                if not any((c is None or holds(c)) and (inner == "" or holds(inner)) for c, inner in grants):
                    problem(f"{name} reads {parameter} ({variable}) but its role may not get it when {row}")
                    break
                if row["SecretsKmsKeyArn"] != "" and not any(c is None or holds(c) for c in keys):
                    problem(f"{name} reads {parameter} ({variable}) but its role may not decrypt it with "
                            f"SecretsKmsKeyArn when {row}")
                    break


if __name__ == "__main__":
    args = sys.argv[1:]
    check(Path(args[0]) if args else REPO / "template.yaml",
          Path(args[1]) if len(args) > 1 else REPO / "docs/template-parameters.md")
    for line in problems:
        print(f"check-template: {line}", file=sys.stderr)
    sys.exit(1 if problems else 0)
