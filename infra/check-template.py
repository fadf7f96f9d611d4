#!/usr/bin/env python3
"""Invariants of template.yaml that cfn-lint cannot see (it does not evaluate Rules or read our docs):
on-failure destinations wired end to end, SourceAccessConfigurations and AccessConfigs within the API's
limits, unique statement ids, the idempotency table's IAM against the store's calls, every parameter
documented, every secret a function or a mapping reads granted (and decryptable), a schema registry on a
mapping in provisioned mode only, glue actions only for a Glue registry and on it.

    python infra/check-template.py [template.yaml [docs/template-parameters.md]]

Run by infra/lint-template.sh inside its venv (it needs cfnlint.decode, which reads the YAML short tags).
Offline. Prints one line per broken invariant, naming what is wrong, and exits 1; prints nothing on success.
"""
import itertools
import json
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
# Schema registry: the condition that holds exactly when SchemaRegistryUri is a Glue registry's ARN (the
# template tests the URI's first `:`-separated field, which a truth table takes as an opaque true/false),
# the parameter holding the URI, the most AccessConfigs the API takes ("Maximum: 2"), and the actions the
# mapping needs on a Glue registry (the function calls GetSchemaVersion only).
GLUE_CONDITION = "SchemaRegistryIsGlue"
REGISTRY_URI = "SchemaRegistryUri"
ACCESS_CONFIGS_LIMIT = 2
GLUE_MAPPING_ACTIONS = ("glue:GetRegistry", "glue:GetSchemaVersion")

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


def render(node):
    """A short text for an intrinsic function: split(SchemaRegistryUri, ':')[0] == 'arn'."""
    if isinstance(node, dict) and len(node) == 1:
        (function, args), = node.items()
        if function == "Ref":
            return args
        if function == "Fn::Select":
            return f"{render(args[1])}[{args[0]}]"
        if function == "Fn::Split":
            return f"split({render(args[1])}, {args[0]!r})"
        if function == "Fn::Equals":
            return " == ".join(map(render, args))
    return repr(node) if isinstance(node, str) else json.dumps(node, sort_keys=True)


def opaque(node):
    """The name a truth table gives a comparison it cannot evaluate (not `Ref` against a literal)."""
    return f"<{render(node)}>"


def truth_table(conditions, parameters, names, extra=()):
    """Every assignment of the parameters the named conditions read (plus extra), each with a function
    that evaluates a condition under it. A parameter takes its AllowedValues, else each value a condition
    compares it with plus one other non-empty value. A comparison of anything else (say, a field of a
    parameter cut out with Fn::Select) is an opaque atom that takes both True and False."""
    compared = {}

    def scan(node):
        if isinstance(node, dict) and "Condition" in node and len(node) == 1:
            scan(conditions[node["Condition"]])
        elif isinstance(node, dict) and "Fn::Equals" in node:
            refs = [a["Ref"] for a in node["Fn::Equals"] if isinstance(a, dict) and set(a) == {"Ref"}]
            literals = [a for a in node["Fn::Equals"] if isinstance(a, str)]
            if len(refs) != 1 or len(literals) != 1:
                compared[opaque(node)] = None
                return
            compared.setdefault(refs[0], set()).add(literals[0])
        elif isinstance(node, dict):
            (args,) = node.values()
            for a in args:
                scan(a)

    for name in names:
        scan({"Condition": name})
    for name in extra:
        compared.setdefault(name, {""})
    domains = {p: [False, True] if v is None else parameters[p].get("AllowedValues") or sorted(v | {"<other>"})
               for p, v in compared.items()}

    compiled = {}

    def compile_node(node):
        """node as a function of a row (compiled once: a table has many rows)."""
        if "Condition" in node and len(node) == 1:
            name = node["Condition"]
            if name not in compiled:
                compiled[name] = compile_node(conditions[name])
            return compiled[name]
        (function, args), = node.items()
        if function == "Fn::Equals":
            if opaque(node) in compared:
                key = opaque(node)
                return lambda row: row[key]
            ref = next(a["Ref"] for a in args if isinstance(a, dict))
            literal = next(a for a in args if isinstance(a, str))
            return lambda row: row[ref] == literal
        parts = [compile_node(a) for a in args]
        if function == "Fn::Not":
            return lambda row: not parts[0](row)
        if function == "Fn::And":
            return lambda row: all(part(row) for part in parts)
        return lambda row: any(part(row) for part in parts)  # Fn::Or

    rows = [dict(zip(domains, combo)) for combo in itertools.product(*domains.values())]
    return [(row, lambda name, row=row: compile_node({"Condition": name})(row)) for row in rows]


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
            check_secret_read(f"{name} ({variable})", role, value["Fn::If"][1]["Ref"], value["Fn::If"][0],
                              conditions, parameters)

    # 7. The schema registry: each mapping's SchemaRegistryConfig exists only in provisioned mode, with at
    #    most 2 AccessConfigs whose secrets its execution role may read (as in 6) whenever the entry
    #    exists; glue actions exist only under GLUE_CONDITION, on the registry's ARN and its schemas
    #    (never "*"); with a Glue registry the role may call GetRegistry and GetSchemaVersion whenever a
    #    mapping validates against it, and GetSchemaVersion whenever its function gets SCHEMA_REGISTRY_URL.
    if GLUE_CONDITION not in conditions:
        problem(f"no condition {GLUE_CONDITION} (true exactly when {REGISTRY_URI} is a Glue registry's ARN)")
        return
    extended = dict(conditions)  # plus one condition per AccessConfigs entry: when the mapping reads it
    glue_users = []  # (who, role, condition under which it uses the registry, the glue actions it needs)
    for esm in ESMS:
        properties = resources[esm]["Properties"]
        role = resources[properties["FunctionName"]["Ref"]]["Properties"]["Role"]["Fn::GetAtt"][0]
        nodes = [c["SchemaRegistryConfig"] for k, c in properties.items()
                 if k.endswith("KafkaEventSourceConfig") and "SchemaRegistryConfig" in c]
        if len(nodes) != 1 or not (isinstance(nodes[0], dict) and "Fn::If" in nodes[0]
                                   and no_value(nodes[0]["Fn::If"][2])):
            problem(f"{esm}: expected one SchemaRegistryConfig: !If [Condition, {{...}}, !Ref AWS::NoValue]")
            continue
        on_mapping, config = nodes[0]["Fn::If"][:2]
        for row, holds in truth_table(conditions, parameters, [on_mapping]):
            if holds(on_mapping) and row.get("ProvisionedMode") != "true":
                problem(f"{esm}: SchemaRegistryConfig (condition {on_mapping}) may exist outside provisioned "
                        f"mode: {row}")
                break
        glue_users.append((esm, resources[role], on_mapping, GLUE_MAPPING_ACTIONS))
        access = config.get("AccessConfigs", {"Ref": "AWS::NoValue"})
        if max_entries(access) > ACCESS_CONFIGS_LIMIT:
            problem(f"{esm}: up to {max_entries(access)} AccessConfigs, the API takes {ACCESS_CONFIGS_LIMIT}")
        outer, items = [on_mapping], access
        if isinstance(access, dict) and "Fn::If" in access:
            outer, items = [on_mapping, access["Fn::If"][0]], access["Fn::If"][1]
        for item in [] if no_value(items) else items:
            inner = list(outer)
            if isinstance(item, dict) and "Fn::If" in item:
                inner, item = inner + [item["Fn::If"][0]], item["Fn::If"][1]
            uri = item.get("URI") if isinstance(item, dict) else None
            if not (isinstance(uri, dict) and set(uri) == {"Ref"}):
                problem(f"{esm}: an AccessConfigs entry's URI is not !Ref of a parameter: {uri!r}")
                continue
            reads = f"<{esm} AccessConfigs {uri['Ref']}>"
            extended[reads] = {"Fn::And": [{"Condition": c} for c in inner]}
            check_secret_read(f"{esm} (AccessConfigs)", resources[role], uri["Ref"], reads, extended, parameters)
    for name, resource in resources.items():
        value = resource["Properties"].get("Environment", {}).get("Variables", {}).get("SCHEMA_REGISTRY_URL") \
            if resource["Type"] == "AWS::Serverless::Function" else None
        if value is None:
            continue
        if not (isinstance(value, dict) and "Fn::If" in value and value["Fn::If"][1] == {"Ref": REGISTRY_URI}
                and no_value(value["Fn::If"][2])):
            problem(f"{name} SCHEMA_REGISTRY_URL: expected !If [Condition, !Ref {REGISTRY_URI}, !Ref AWS::NoValue]")
            continue
        role = resources[resource["Properties"]["Role"]["Fn::GetAtt"][0]]
        glue_users.append((f"{name} (SCHEMA_REGISTRY_URL)", role, value["Fn::If"][0], ("glue:GetSchemaVersion",)))
    for who, role, uses, actions in glue_users:
        for action in actions:
            grants = [c for c, _ in secret_grants(role, action)]
            table = truth_table(extended, parameters, [uses, GLUE_CONDITION] + [c for c in grants if c])
            for row, holds in table:
                if holds(uses) and holds(GLUE_CONDITION) and not any(c is None or holds(c) for c in grants):
                    problem(f"{who} uses a Glue registry but its role may not call {action} when {row}")
                    break
    for name, resource in resources.items():
        if resource["Type"] not in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            continue
        for s in statements(resource):
            condition = None
            if isinstance(s, dict) and "Fn::If" in s:
                condition, s = s["Fn::If"][0], s["Fn::If"][1]
            if no_value(s):
                continue
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if not any(a.startswith("glue:") for a in actions):
                continue
            table = truth_table(conditions, parameters, [condition or GLUE_CONDITION, GLUE_CONDITION])
            if condition is None or any(holds(condition) and not holds(GLUE_CONDITION) for _, holds in table):
                problem(f"{name} {s.get('Sid')}: its glue actions may be granted without a Glue registry "
                        f"(condition {condition}, not implying {GLUE_CONDITION})")
            targets = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            for target in targets:
                text = json.dumps(target)
                # glue:GetSchemaVersion has no resource-level permission (a call by SchemaVersionId
                # names no registry): it is granted on "*", alone in its statement.
                if target == "*" and actions == ["glue:GetSchemaVersion"]:
                    continue
                if "*" == target or ('"Ref": "' + REGISTRY_URI + '"' not in text and "${" + REGISTRY_URI + "}" not in text):
                    problem(f"{name} {s.get('Sid')}: glue resource {target!r} is not derived from {REGISTRY_URI}")


def check_secret_read(who, role, parameter, reads, conditions, parameters):
    """who reads the secret parameter names whenever condition reads holds: role must be granted
    secretsmanager:GetSecretValue on it then, and kms:Decrypt on SecretsKmsKeyArn when that key is given."""
    grants = [(c, granted_to(r, parameter)) for c, r in secret_grants(role, "secretsmanager:GetSecretValue")]
    grants = [(c, inner) for c, inner in grants if inner is not None]
    keys = [c for c, r in secret_grants(role, "kms:Decrypt") if r == {"Ref": "SecretsKmsKeyArn"}]
    names = [reads] + [c for g in grants for c in g if c] + [c for c in keys if c]
    for row, holds in truth_table(conditions, parameters, names, extra=["SecretsKmsKeyArn"]):
        if not holds(reads):
            continue
        if not any((c is None or holds(c)) and (inner == "" or holds(inner)) for c, inner in grants):
            problem(f"{who} reads {parameter} but its role may not get it when {row}")
            break
        if row["SecretsKmsKeyArn"] != "" and not any(c is None or holds(c) for c in keys):
            problem(f"{who} reads {parameter} but its role may not decrypt it with SecretsKmsKeyArn when {row}")
            break


if __name__ == "__main__":
    args = sys.argv[1:]
    check(Path(args[0]) if args else REPO / "template.yaml",
          Path(args[1]) if len(args) > 1 else REPO / "docs/template-parameters.md")
    for line in problems:
        print(f"check-template: {line}", file=sys.stderr)
    sys.exit(1 if problems else 0)
