/** Small DOM helpers: elements built with text only (never HTML), and typed look-ups of the page's elements. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** The page's element with this id, of this type; a missing one is a broken index.html. */
export function byId<T extends HTMLElement>(id: string, type: abstract new () => T): T {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new Error(`index.html has no <${type.name}> #${id}`);
  return element;
}

/** Says `text` through the page's polite live region, for screen readers. */
export function announce(text: string): void {
  const region = byId("announcer", HTMLElement);
  region.textContent = text;
}
