// Bounds on the sizes in a model config read from a file, so that a negative or absurd value is
// refused by name before any tensor is allocated (a width of 1e9 would otherwise ask for
// petabytes, or crash deep inside libtorch with no field named).

/** The inclusive range of an integer field. */
export interface SizeRange { min: number; max: number }

/** Throws `<where>: "<field>" must be an integer in [min, max], got <value>` for the first field out of range. */
export function checkSizes(where: string, config: Readonly<Record<string, unknown>>, ranges: Readonly<Record<string, SizeRange>>): void {
  for (const [field, { min, max }] of Object.entries(ranges)) {
    const value = config[field];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new Error(`${where}: "${field}" must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
    }
  }
}

/** Throws when `width` does not split into `heads` heads. */
export function checkHeads(where: string, width: number, heads: number, widthField: string): void {
  if (width % heads !== 0) throw new Error(`${where}: "${widthField}" ${width} does not split into numHeads ${heads} heads`);
}
