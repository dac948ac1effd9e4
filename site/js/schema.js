// scene.json and report.json against their JSON Schemas (schema/<kind>.schema.json), the one
// definition of both formats, with Ajv (vendor/ajv2020.min.mjs, bundled by tools/vendor.mjs).
// export/site_format.py checks every file it writes against the same schemas, and a violation
// reads the same on both sides (export/json_schema.py's SchemaViolation):
//   "<field>" <what it must be> (got <value>)
// with <field> a dotted path, [i] for array items ("orbit.radius", "views[3].psnr").
// No DOM here: tests/test_site_format.py runs this module in node against the Python validator.

/** URL of the vendored Ajv bundle (its default export is the Ajv2020 class). */
export const AJV_URL = new URL('../vendor/ajv2020.min.mjs', import.meta.url).href;

let ajvClass = null;

/** Import the Ajv2020 class from vendor/ (once); throws if the file is missing or broken. */
export async function loadAjv() {
  ajvClass ??= (await import(AJV_URL)).default;
  return ajvClass;
}

/**
 * A function doc -> null (valid) or its first violation as {field, message}, `message` being
 * the whole `"<field>" ...` text. Throws if Ajv cannot be imported or refuses the schema.
 */
export async function compileSchema(schema) {
  const Ajv = await loadAjv();
  // verbose: errors carry the failing value (`data`) and the schema around the keyword
  // (`parentSchema`), which the messages quote. Ajv2020: the schemas are draft 2020-12.
  const validate = new Ajv({ verbose: true }).compile(schema);
  return (doc) => (validate(doc) ? null : violation(validate.errors[0], doc));
}

/** Python's json.dumps(value), cut to 60 characters as export/json_schema.py's _shown does. */
function shown(value) {
  const dumps = (v) => {
    if (Array.isArray(v)) return `[${v.map(dumps).join(', ')}]`;
    if (v !== null && typeof v === 'object') {
      return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${dumps(x)}`).join(', ')}}`;
    }
    return JSON.stringify(v) ?? 'nothing';
  };
  const text = dumps(value);
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

const TOP = '(top level)';
const member = (path, key) => (path === TOP ? key : `${path}.${key}`);

/** The field an Ajv instancePath ("/reference/pose/2") names in `doc`: "reference.pose[2]". */
function fieldOf(instancePath, doc) {
  let path = TOP, node = doc;
  for (const raw of instancePath.split('/').slice(1)) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    path = Array.isArray(node) ? `${path}[${key}]` : member(path, key);
    node = node?.[key];
  }
  return path;
}

/** Ajv's error `e` as {field, message}, worded as export/json_schema.py words the same violation. */
export function violation(e, doc) {
  let field = fieldOf(e.instancePath, doc);
  const got = `(got ${shown(e.data)})`;
  let text;
  switch (e.keyword) {
    case 'required':
      field = member(field, e.params.missingProperty);
      text = 'is required but missing';
      break;
    case 'type': {
      const types = [].concat(e.schema);
      const finite = types.includes('number') || types.includes('integer') ? ' (finite)' : '';
      text = `must be ${types.join(' or ')}${finite} ${got}`;
      break;
    }
    case 'const':
      text = `must be ${shown(e.params.allowedValue)} ${got}`;
      break;
    case 'enum':
      text = `must be one of ${shown(e.params.allowedValues)} ${got}`;
      break;
    case 'minItems':
    case 'maxItems': {
      const lo = e.parentSchema.minItems ?? 0, hi = e.parentSchema.maxItems ?? 'any';
      text = `must have ${lo === hi ? lo : `${lo} to ${hi}`} items (got ${e.data.length})`;
      break;
    }
    case 'minLength':
      text = `must be at least ${e.params.limit} character(s) long ${got}`;
      break;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      text = `must be ${e.params.comparison} ${e.params.limit} ${got}`;
      break;
    default: // a keyword export/json_schema.py does not implement (it refuses such schemas)
      text = `${e.message} ${got}`;
  }
  return { field, message: `"${field}" ${text}` };
}
