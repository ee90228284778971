// Keyboard shortcuts of the Review tab (j/k next/previous, h/l or arrows move the focused
// candidate, 1-5 rate it, s submit). Ignored while typing in a text field. Loaded into the
// page's <head> by capyui.app (LAUNCH_STYLE).
(() => {
  if (window.__capyuiKeys) return;
  window.__capyuiKeys = true;
  let focus = 0;
  const slots = () => Array.from(document.querySelectorAll('#cu-review .cu-cand-slot'))
    .filter(el => el.offsetParent !== null);
  const show = () => {
    const all = slots();
    if (focus >= all.length) focus = 0;
    document.querySelectorAll('#cu-review .cu-cand-slot')
      .forEach(el => el.classList.remove('cu-focus'));
    if (all[focus]) all[focus].classList.add('cu-focus');
  };
  const click = id => { const b = document.getElementById(id); if (b) b.click(); };
  document.addEventListener('click', e => {
    const slot = e.target.closest && e.target.closest('#cu-review .cu-cand-slot');
    if (slot) { focus = Math.max(0, slots().indexOf(slot)); show(); }
  }, true);
  document.addEventListener('keydown', e => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
        (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)))) return;
    const review = document.getElementById('cu-review');
    if (!review || review.offsetParent === null) return;
    const k = e.key;
    if (k === 'j') { focus = 0; click('cu-next'); }
    else if (k === 'k') { focus = 0; click('cu-prev'); }
    else if (k === 's') { click('cu-submit'); }
    else if (k === 'l' || k === 'ArrowRight') {
      focus = Math.min(focus + 1, slots().length - 1); show();
    }
    else if (k === 'h' || k === 'ArrowLeft') { focus = Math.max(focus - 1, 0); show(); }
    else if ('12345'.includes(k) && k.length === 1) {
      const slot = slots()[focus];
      if (!slot) return;
      const input = slot.querySelectorAll('input[type=radio]')[Number(k) - 1];
      if (input) { input.click(); show(); }
    } else return;
    e.preventDefault();
  });
  new MutationObserver(() => {
    const r = document.getElementById('cu-review');
    if (r && !r.querySelector('.cu-focus')) show();
  }).observe(document.documentElement, {subtree: true, childList: true});
})();
