// Keyboard shortcuts of the Arena tab (a / b the better answer, t tie, x both bad, s skip).
// Ignored while typing in a text field. Loaded into the page's <head> by capyui.app.
(() => {
  if (window.__capyuiArenaKeys) return;
  window.__capyuiArenaKeys = true;
  const ids = {a: 'cu-arena-a', b: 'cu-arena-b', t: 'cu-arena-tie', x: 'cu-arena-bad',
               s: 'cu-arena-skip'};
  document.addEventListener('keydown', e => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
        (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)))) return;
    const arena = document.getElementById('cu-arena');
    if (!arena || arena.offsetParent === null) return;
    const id = ids[e.key.toLowerCase()];
    if (!id) return;
    const b = document.getElementById(id);
    if (b && !b.disabled) { b.click(); e.preventDefault(); }
  });
})();
